"""Authentication (password file) and authorization (ACL file) for the broker.

Nothing here does I/O on the event loop or knows about connections: the broker loads a
`PasswordFile` and an `AclRules` at start (and on reload, by loading again and swapping), runs
`PasswordFile.verify` in a thread executor because it is slow by design, and resolves one
`ClientAcl` per connection at CONNECT to check PUBLISH (WRITE), SUBSCRIBE and delivery (READ).
"""

from .acl import Access, AclError, AclRules, ClientAcl
from .passwords import (
    DEFAULT_PARAMS,
    HashParams,
    PasswordFile,
    PasswordFileError,
    PasswordHash,
    Pbkdf2Params,
    ScryptParams,
)

__all__ = [
    "DEFAULT_PARAMS",
    "Access",
    "AclError",
    "AclRules",
    "ClientAcl",
    "HashParams",
    "PasswordFile",
    "PasswordFileError",
    "PasswordHash",
    "Pbkdf2Params",
    "ScryptParams",
]
