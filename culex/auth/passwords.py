"""The password file: one `user:hash` per line, salted and deliberately slow to brute-force.

Format (blank lines and lines starting with `#` are ignored and kept on save)::

    alice:$scrypt$n=16384,r=8,p=1$<salt base64>$<key base64>
    bob:$pbkdf2-sha512$210000$<salt base64>$<key base64>
    carol:$scrypt$n=16384,r=8,p=1$<salt>$<key>:$scram-sha-256$i=600000$<salt>$<StoredKey>$<ServerKey>

A user may carry a second, optional field after another `:`: SCRAM-SHA-256 credentials (RFC
5802/7677) for MQTT 5 enhanced authentication, written by `culex passwd --scram`. The scrypt or
PBKDF2 hash cannot serve SCRAM (the client must be able to derive the same SaltedPassword), so
SCRAM needs its own entry: the iteration count and salt of PBKDF2-HMAC-SHA256, and StoredKey =
H(HMAC(SaltedPassword, "Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key"). Neither
key lets anyone log in, but both are guessable offline at PBKDF2-SHA256 speed, which is cheaper
for an attacker than scrypt: that is why SCRAM entries are opt-in per user. Both fields come from
the same password, and changing a password without `--scram` drops the SCRAM entry, so an old
password can never stay valid through the other mechanism.

Both schemes are memory- or CPU-hard key derivations from `hashlib` (OpenSSL), so a stolen file
costs an attacker ~50-100 ms per guess per core. scrypt is the default (memory-hard: GPUs gain
little); PBKDF2-SHA512 is there for deployments that must use a FIPS-approved function.

Verification is slow on purpose, so it must not run on the event loop: the broker calls
`PasswordFile.verify` through `loop.run_in_executor` with a bounded thread pool. OpenSSL releases
the GIL while deriving, so the threads really run in parallel, and the pool size bounds the memory
scrypt needs (16 MiB per verification at the default cost). There is deliberately no cache of
successful verifications: a cache would keep password-equivalent data in memory and make the
timing of a hit different from a miss.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

from .files import FileProblem, read_file, write_atomically

SCRYPT = "scrypt"
PBKDF2_SHA512 = "pbkdf2-sha512"
SCHEMES = (SCRYPT, PBKDF2_SHA512)
SCRAM_SHA_256 = "scram-sha-256"

SALT_BYTES = 16
KEY_BYTES = 32

# Limits on parameters read from a file. The file is the administrator's, but a typo such as
# n=16777216 or iterations=2100000000 would turn every CONNECT into a multi-second, gigabyte
# computation: refuse such a file when loading rather than discover it under load.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
MAX_SCRYPT_P = 16
MAX_PBKDF2_ITERATIONS = 10_000_000
MIN_SALT_BYTES = 8
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 64
# RFC 7677 §4: the iteration count SHOULD be at least 4096. The client derives SaltedPassword on
# every login (the broker never does), so the default follows OWASP's 2023 figure for
# PBKDF2-HMAC-SHA256 and `culex passwd --scram-iterations` can lower it for small devices.
MIN_SCRAM_ITERATIONS = 4096
DEFAULT_SCRAM_ITERATIONS = 600_000
SCRAM_KEY_BYTES = 32  # SHA-256 output: StoredKey and ServerKey
# mosquitto_passwd's hashes: "$6$" (salted SHA-512) and "$7$" (PBKDF2-SHA512); Mosquitto
# accepts exactly these sizes (src/security_default.c), and so does Culex.
MOSQUITTO_SHA512 = "6"
MOSQUITTO_PBKDF2 = "7"
MOSQUITTO_SALT_BYTES = 12
MOSQUITTO_KEY_BYTES = 64
# Below this many PBKDF2 iterations (Culex's default for pbkdf2-sha512), a hash counts as weak.
WEAK_PBKDF2_ITERATIONS = 210_000


class PasswordFileError(FileProblem):
    """A password file cannot be read or used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost. The default (N=2^14, r=8, p=1: 16 MiB, ~50 ms) is the commonly recommended
    interactive-login setting; raise n to make guessing dearer, at the broker's expense too."""

    n: int = 16384
    r: int = 8
    p: int = 1

    def problem(self) -> str | None:
        if self.n < 2 or self.n & (self.n - 1):
            return f"scrypt n={self.n} is not a power of two >= 2"
        if self.r < 1 or not 1 <= self.p <= MAX_SCRYPT_P:
            return f"scrypt r={self.r}, p={self.p} out of range (r >= 1, 1 <= p <= {MAX_SCRYPT_P})"
        if self.memory() > MAX_SCRYPT_MEMORY:
            return (f"scrypt n={self.n}, r={self.r} needs {self.memory() // 2**20} MiB per "
                    f"verification (limit {MAX_SCRYPT_MEMORY // 2**20} MiB)")
        return None

    def memory(self) -> int:
        """Bytes OpenSSL allocates (its own formula); passed as maxmem so it never refuses."""
        return 128 * self.r * (self.n + self.p + 2)


@dataclass(frozen=True, slots=True)
class Pbkdf2Params:
    """PBKDF2-HMAC-SHA512 cost. 210,000 iterations is OWASP's 2023 recommendation for SHA-512."""

    iterations: int = 210_000

    def problem(self) -> str | None:
        if not 1 <= self.iterations <= MAX_PBKDF2_ITERATIONS:
            return f"pbkdf2 iterations={self.iterations} out of range 1..{MAX_PBKDF2_ITERATIONS}"
        return None


@dataclass(frozen=True, slots=True)
class MosquittoPbkdf2Params(Pbkdf2Params):
    """mosquitto_passwd's default, `$7$iterations$salt$hash`: the same PBKDF2-HMAC-SHA512 as
    Culex's pbkdf2-sha512, written in Mosquitto's form. mosquitto_passwd uses 101 iterations
    unless given `-I`, which makes a guess cheap: `culex passwd --rehash` replaces it."""

    iterations: int = 101


@dataclass(frozen=True, slots=True)
class MosquittoSha512Params:
    """`mosquitto_passwd -H sha512` (Mosquitto 1.6 and earlier), `$6$salt$hash`: one SHA-512
    of the password followed by the salt. A guess costs one hash: weak by any standard."""

    def problem(self) -> str | None:
        return None


HashParams = ScryptParams | Pbkdf2Params | MosquittoSha512Params

DEFAULT_PARAMS: HashParams = ScryptParams()


def params_for_scheme(scheme: str) -> HashParams:
    """Default cost for a scheme name from SCHEMES (what `culex passwd --scheme` accepts)."""
    if scheme == SCRYPT:
        return ScryptParams()
    if scheme == PBKDF2_SHA512:
        return Pbkdf2Params()
    raise ValueError(f"unknown password scheme {scheme!r} (expected {' or '.join(SCHEMES)})")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} is not valid base64") from None


def _int(text: str, what: str) -> int:
    # int() alone would accept "+5", " 5" and "5_000"; a hash field is digits only.
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{what} {text!r} is not a decimal number")
    return int(text)


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """One stored hash, parsed once at load so that verification does no parsing."""

    params: HashParams
    salt: bytes
    key: bytes

    @classmethod
    def create(cls, password: bytes, params: HashParams = DEFAULT_PARAMS) -> PasswordHash:
        problem = params.problem()
        if problem:
            raise ValueError(problem)
        salt = secrets.token_bytes(SALT_BYTES)
        return cls(params, salt, _derive(params, salt, password, KEY_BYTES))

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Parse `$scheme$params$salt$key`, or mosquitto_passwd's `$6$salt$hash` and
        `$7$iterations$salt$hash`; ValueError says which part is wrong."""
        if text.startswith((f"${MOSQUITTO_SHA512}$", f"${MOSQUITTO_PBKDF2}$")):
            return cls._parse_mosquitto(text)
        parts = text.split("$")
        if len(parts) != 5 or parts[0]:
            raise ValueError("hash is not of the form $scheme$params$salt$key")
        _, scheme, param_text, salt_text, key_text = parts
        params: HashParams
        if scheme == SCRYPT:
            fields: dict[str, str] = {}
            for item in param_text.split(","):
                name, _, value = item.partition("=")
                fields[name] = value
            if sorted(fields) != ["n", "p", "r"] or param_text.count(",") != 2:
                raise ValueError(f"scrypt parameters {param_text!r} are not n=..,r=..,p=..")
            params = ScryptParams(_int(fields["n"], "scrypt n"), _int(fields["r"], "scrypt r"),
                                  _int(fields["p"], "scrypt p"))
        elif scheme == PBKDF2_SHA512:
            params = Pbkdf2Params(_int(param_text, "pbkdf2 iterations"))
        else:
            raise ValueError(f"unknown hash scheme {scheme!r} (expected {' or '.join(SCHEMES)}, "
                             "or mosquitto_passwd's $6$ or $7$)")
        problem = params.problem()
        if problem:
            raise ValueError(problem)
        salt = _unb64(salt_text, "salt")
        key = _unb64(key_text, "hash")
        if len(salt) < MIN_SALT_BYTES:
            raise ValueError(f"salt is {len(salt)} bytes, need at least {MIN_SALT_BYTES}")
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise ValueError(f"hash is {len(key)} bytes, need {MIN_KEY_BYTES}..{MAX_KEY_BYTES}")
        return cls(params, salt, key)

    @classmethod
    def _parse_mosquitto(cls, text: str) -> PasswordHash:
        parts = text.split("$")
        params: HashParams
        if parts[1] == MOSQUITTO_SHA512 and len(parts) == 4:
            params = MosquittoSha512Params()
        elif parts[1] == MOSQUITTO_PBKDF2 and len(parts) == 5:
            params = MosquittoPbkdf2Params(_int(parts.pop(2), "$7$ iterations"))
        else:
            raise ValueError("mosquitto_passwd hash is not $6$salt$hash or "
                             "$7$iterations$salt$hash")
        problem = params.problem()
        if problem:
            raise ValueError(problem)
        salt, key = _unb64(parts[2], "salt"), _unb64(parts[3], "hash")
        if len(salt) != MOSQUITTO_SALT_BYTES or len(key) != MOSQUITTO_KEY_BYTES:
            raise ValueError(f"mosquitto_passwd hash needs a {MOSQUITTO_SALT_BYTES}-byte salt "
                             f"and a {MOSQUITTO_KEY_BYTES}-byte hash, not {len(salt)} and "
                             f"{len(key)}")
        return cls(params, salt, key)

    def encode(self) -> str:
        p = self.params
        if isinstance(p, ScryptParams):
            head = f"${SCRYPT}$n={p.n},r={p.r},p={p.p}"
        elif isinstance(p, MosquittoSha512Params):
            head = f"${MOSQUITTO_SHA512}"
        elif isinstance(p, MosquittoPbkdf2Params):
            head = f"${MOSQUITTO_PBKDF2}${p.iterations}"
        else:
            head = f"${PBKDF2_SHA512}${p.iterations}"
        return f"{head}${_b64(self.salt)}${_b64(self.key)}"

    def weakness(self) -> str | None:
        """Why this hash is cheap to guess, or None: Mosquitto's $6$, and PBKDF2 with fewer
        iterations than Culex's default (mosquitto_passwd's $7$ has 101)."""
        p = self.params
        if isinstance(p, MosquittoSha512Params):
            return "one salted SHA-512 ($6$)"
        if isinstance(p, Pbkdf2Params) and p.iterations < WEAK_PBKDF2_ITERATIONS:
            return f"PBKDF2-SHA512 with {p.iterations} iterations"
        return None

    def matches(self, password: bytes) -> bool:
        # compare_digest: the time taken must not depend on how many leading bytes match.
        return hmac.compare_digest(_derive(self.params, self.salt, password, len(self.key)),
                                   self.key)


def _derive(params: HashParams, salt: bytes, password: bytes, length: int) -> bytes:
    if isinstance(params, ScryptParams):
        return hashlib.scrypt(password, salt=salt, n=params.n, r=params.r, p=params.p,
                              maxmem=params.memory() + 65536, dklen=length)
    if isinstance(params, MosquittoSha512Params):
        # Mosquitto hashes the password up to its first NUL byte (strlen); the hash of a
        # password with a NUL could never have been written by mosquitto_passwd, so Culex
        # hashes all the bytes and such a password simply does not match.
        return hashlib.sha512(password + salt).digest()
    return hashlib.pbkdf2_hmac("sha512", password, salt, params.iterations, length)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


# RFC 3454 tables whose characters SASLprep prohibits (RFC 4013 §2.3), and A.1 (unassigned in
# Unicode 3.2), prohibited too since the result is stored (RFC 4013 §2.5).
_SASLPREP_PROHIBITED = (
    stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
    stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
    stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
    stringprep.in_table_a1,
)


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep with the standard library's RFC 3454 tables: map (non-ASCII spaces to
    SPACE, "commonly mapped to nothing" removed), NFKC, prohibit, check bidi. ValueError says
    which rule a string breaks."""
    mapped = "".join(" " if stringprep.in_table_c12(char) else char for char in text
                     if not stringprep.in_table_b1(char))
    normalized = unicodedata.normalize("NFKC", mapped)
    for char in normalized:
        if any(prohibited(char) for prohibited in _SASLPREP_PROHIBITED):
            raise ValueError(f"character U+{ord(char):04X} is not allowed (SASLprep, "
                             "RFC 4013)")
    right_to_left = any(stringprep.in_table_d1(char) for char in normalized)
    if right_to_left and (any(stringprep.in_table_d2(char) for char in normalized)
                          or not stringprep.in_table_d1(normalized[0])
                          or not stringprep.in_table_d1(normalized[-1])):
        raise ValueError("mixed or misplaced right-to-left characters (SASLprep, RFC 3454 §6)")
    return normalized


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the server keeps for SCRAM-SHA-256 (RFC 5802 §3): enough to check a client's proof
    and to prove itself, not enough to log in as the user (that needs ClientKey)."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def create(cls, password: bytes, iterations: int = DEFAULT_SCRAM_ITERATIONS,
               salt: bytes | None = None) -> ScramCredential:
        """Derive the keys from the password as SCRAM clients do: SASLprep'd (RFC 5802 §2.2),
        so a client that normalizes a non-ASCII password (as libraries must) matches."""
        problem = _scram_iterations_problem(iterations)
        if problem:
            raise ValueError(problem)
        with contextlib.suppress(UnicodeDecodeError):  # not text: used as the bytes it is
            password = saslprep(password.decode()).encode()
        salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
        salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        client_key = hmac_sha256(salted, b"Client Key")
        return cls(iterations, salt, hashlib.sha256(client_key).digest(),
                   hmac_sha256(salted, b"Server Key"))

    @classmethod
    def parse(cls, text: str) -> ScramCredential:
        """Parse `$scram-sha-256$i=N$salt$storedkey$serverkey`; ValueError says what is wrong."""
        parts = text.split("$")
        if len(parts) != 6 or parts[0] or parts[1] != SCRAM_SHA_256 \
                or not parts[2].startswith("i="):
            raise ValueError(f"SCRAM entry is not ${SCRAM_SHA_256}$i=..$salt$storedkey$serverkey")
        iterations = _int(parts[2][2:], "SCRAM iterations")
        problem = _scram_iterations_problem(iterations)
        if problem:
            raise ValueError(problem)
        salt = _unb64(parts[3], "SCRAM salt")
        if len(salt) < MIN_SALT_BYTES:
            raise ValueError(f"SCRAM salt is {len(salt)} bytes, need at least {MIN_SALT_BYTES}")
        keys = [_unb64(parts[4], "SCRAM StoredKey"), _unb64(parts[5], "SCRAM ServerKey")]
        if any(len(key) != SCRAM_KEY_BYTES for key in keys):
            raise ValueError(f"SCRAM StoredKey and ServerKey must be {SCRAM_KEY_BYTES} bytes")
        return cls(iterations, salt, keys[0], keys[1])

    def encode(self) -> str:
        return (f"${SCRAM_SHA_256}$i={self.iterations}${_b64(self.salt)}"
                f"${_b64(self.stored_key)}${_b64(self.server_key)}")


def _scram_iterations_problem(iterations: int) -> str | None:
    if not MIN_SCRAM_ITERATIONS <= iterations <= MAX_PBKDF2_ITERATIONS:
        return (f"SCRAM iterations={iterations} out of range "
                f"{MIN_SCRAM_ITERATIONS}..{MAX_PBKDF2_ITERATIONS}")
    return None


def check_username(username: str) -> str | None:
    """Why a user name cannot be stored in the file, or None when it can.

    ':' ends the name and '\\n' ends the line. A name that would read back as a comment (first
    non-blank character '#') or is empty cannot round-trip either.
    """
    if not username:
        return "user name is empty"
    if ":" in username or "\n" in username:
        return "user name must not contain ':' or a newline"
    if username.lstrip().startswith("#"):
        return "user name must not start with '#' (it would read back as a comment)"
    return None


class PasswordFile:
    """The users and their password hashes, with the file's comments kept in place for save.

    `verify` is thread-safe against other `verify` calls; to change users while the broker runs,
    build a new PasswordFile (load) and swap the reference rather than mutating a live one.
    """

    def __init__(self) -> None:
        self._hashes: dict[str, PasswordHash] = {}
        self._scram: dict[str, ScramCredential] = {}
        # Each line of the file: (text, is_user). For users the text is the name and the hash is
        # looked up at save time, so set() updates in place and delete() drops the line.
        self._layout: list[tuple[str, bool]] = []
        self._dummy: PasswordHash | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PasswordFile:
        """Read a password file; PasswordFileError names the file and the line of any problem."""
        name, data = read_file(path, PasswordFileError)
        return cls.parse(data, name)

    @classmethod
    def parse(cls, data: bytes, source: str = "<password file>") -> PasswordFile:
        """Parse the file's bytes; `source` is used in error messages."""
        result = cls()
        # Split on b"\n" only: str.splitlines() also breaks on \x1c, \x85, \u2028 and friends,
        # which are legal inside a user name.
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise PasswordFileError(source, number, "not valid UTF-8") from None
            line = line.removesuffix("\r")
            if not line.strip() or line.lstrip().startswith("#"):
                result._layout.append((line, False))
                continue
            username, colon, hash_text = line.partition(":")
            if not colon:
                raise PasswordFileError(source, number, "expected user:hash")
            if not username:
                raise PasswordFileError(source, number, "empty user name")
            if username in result._hashes:
                # Two entries for one user is ambiguous: which password is meant?
                raise PasswordFileError(source, number, f"user {username!r} appears twice")
            # Neither a hash nor base64 contains ':', so a second one starts the SCRAM field.
            hash_text, _, scram_text = hash_text.partition(":")
            try:
                result._hashes[username] = PasswordHash.parse(hash_text.strip())
                if scram_text.strip():
                    result._scram[username] = ScramCredential.parse(scram_text.strip())
            except ValueError as exc:
                raise PasswordFileError(source, number, f"user {username!r}: {exc}") from None
            result._layout.append((username, True))
        return result

    def __contains__(self, username: object) -> bool:
        return username in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def users(self) -> list[str]:
        """User names in file order."""
        return list(self._hashes)

    def scram_users(self) -> list[str]:
        """The users who can log in with SCRAM-SHA-256, in file order."""
        return [user for user in self._hashes if user in self._scram]

    def scram(self, username: str) -> ScramCredential | None:
        """This user's SCRAM-SHA-256 credentials, or None (unknown user, or no SCRAM entry)."""
        return self._scram.get(username)

    def verify(self, username: str, password: bytes) -> bool:
        """Whether `password` is this user's. Slow (~50 ms) by design: call it off the loop.

        An unknown user costs the same as a known one (a derivation against a dummy hash with the
        file's usual parameters), so response time does not reveal which user names exist.
        """
        stored = self._hashes.get(username)
        if stored is None:
            self._dummy_hash().matches(password)
            return False
        return stored.matches(password)

    def weak_users(self) -> list[tuple[str, str]]:
        """(user, why) for each user whose hash is cheap to guess, in file order."""
        return [(user, why) for user, stored in self._hashes.items()
                if (why := stored.weakness()) is not None]

    def rehash(self, username: str, password: bytes, params: HashParams = DEFAULT_PARAMS) -> bool:
        """Hash the user's current password afresh with `params` (their SCRAM entry, made from
        the same password, stays); False, and nothing changed, when `password` is not theirs."""
        stored = self._hashes.get(username)
        if stored is None or not stored.matches(password):
            return False
        self._hashes[username] = PasswordHash.create(password, params)
        self._dummy = None
        return True

    def set(self, username: str, password: bytes, params: HashParams = DEFAULT_PARAMS,
            scram_iterations: int | None = None) -> None:
        """Add the user or change their password (fresh salt), hashed with `params`, and with
        SCRAM-SHA-256 credentials when `scram_iterations` is given. Without it any previous
        SCRAM entry is dropped: it was made from the old password."""
        problem = check_username(username)
        if problem:
            raise ValueError(problem)
        scram = (ScramCredential.create(password, scram_iterations)
                 if scram_iterations is not None else None)
        password_hash = PasswordHash.create(password, params)
        if username not in self._hashes:
            self._layout.append((username, True))
        self._hashes[username] = password_hash
        self._scram.pop(username, None)
        if scram is not None:
            self._scram[username] = scram
        self._dummy = None

    def delete(self, username: str) -> bool:
        """Remove the user; False when there was no such user."""
        if self._hashes.pop(username, None) is None:
            return False
        self._scram.pop(username, None)
        self._layout.remove((username, True))
        self._dummy = None
        return True

    def dumps(self) -> bytes:
        lines = [f"{text}:{self._hashes[text].encode()}{self._scram_field(text)}" if is_user
                 else text for text, is_user in self._layout]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    def _scram_field(self, username: str) -> str:
        scram = self._scram.get(username)
        return f":{scram.encode()}" if scram is not None else ""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically with mode 0600 (see `write_atomically`); raises OSError."""
        write_atomically(path, self.dumps())

    def _dummy_hash(self) -> PasswordHash:
        # Same parameters as the first stored user so an unknown name costs what a known one
        # does; the key is random, so nothing can ever match it.
        if self._dummy is None:
            first = next(iter(self._hashes.values()), None)
            params = first.params if first else DEFAULT_PARAMS
            length = len(first.key) if first else KEY_BYTES
            self._dummy = PasswordHash(params, secrets.token_bytes(SALT_BYTES),
                                       secrets.token_bytes(length))
        return self._dummy
