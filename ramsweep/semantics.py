"""What defines a result: the engine semantics version, part of every experiment key.

Bump ENGINE_SEMANTICS_VERSION whenever a change alters what the engine computes for a given
spec and data: results from older semantics then get new keys and are run again. A leaf
module, so keys, records and the engine can all name it without importing each other.
"""

ENGINE_SEMANTICS_VERSION = 1
