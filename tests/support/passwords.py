"""The password hasher the tests inject.

The product hashes with argon2's safe defaults (tens of milliseconds and 64 MiB per hash, on
purpose); a test that adds six users and signs three of them in would spend most of its time
there. Tests inject the same algorithm with the cheapest parameters argon2 accepts, so every
path (hash, verify, rehash, throttling) still runs for real.
"""

from argon2 import PasswordHasher

CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
