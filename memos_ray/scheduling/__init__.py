"""The MemScheduler's core: usage beside the versions, the policy's rules, and its decision log (no Ray)."""
