"""The seal of a finished sweep: ``SHA256SUMS``, the SHA-256 of every result file it wrote.

The manifest is in the format of ``sha256sum``, so ``cd SWEEP && sha256sum -c SHA256SUMS``
checks it without this project. It covers every file under the sweep folder (``run.json``,
``model.pt``, checkpoints, Tune's logs and state, ``summary.json``, ``results.csv``,
``sweep.json``, ``best/``, embeddings, pictures, reports) except:

- ``SHA256SUMS`` itself;
- the verifier's own outputs (``verification.json``, ``.md``, ``.html`` and their figures),
  which ``invae-verify`` rewrites from the sealed files each time it runs;
- ``wandb/``: W&B's own folder, which ``wandb sync`` writes into.

It is written atomically, last, when a sweep or audit finishes, and again when a resumed sweep
finishes. The manifest's own SHA-256 stands for the whole folder: published beside a result,
it lets anyone prove the folder they hold is the one that was sealed.
"""

from __future__ import annotations

import hashlib
import re

from sweeper.storage import SweepFolder
from sweeper.verify.records import SealCheck
from trainables.files import ResultFileError

SEAL_FILE = "SHA256SUMS"
VERIFIER_OUTPUTS = re.compile(r"verification(\.json|\.md|\.html|_group_\d+\.png)")
UNSEALED_DIRS = ("wandb",)
_LINE = re.compile(r"(\\?)([0-9a-f]{64}) [ *](.+)")


def is_sealed(relative: str) -> bool:
    """Whether a file (a path relative to the sweep folder) belongs in the seal."""
    if relative == SEAL_FILE or VERIFIER_OUTPUTS.fullmatch(relative):
        return False
    return relative.split("/", 1)[0] not in UNSEALED_DIRS


class FolderReader:
    """Reads a sweep folder's files, each at most once, keeping every file's SHA-256.

    What the verification reads whole (``run.json``, ``model.pt``) is hashed as it is read,
    so checking the seal needs no second read of it.
    """

    def __init__(self, folder: SweepFolder):
        self.folder = folder
        self.digests: dict[str, str] = {}

    def read(self, relative: str) -> bytes:
        """A file's bytes. Raises ResultFileError naming it when missing or unreadable."""
        payload = self.folder.read_bytes(relative)
        self.digests[relative] = hashlib.sha256(payload).hexdigest()
        return payload

    def digest(self, relative: str) -> str:
        """A file's SHA-256, read in chunks unless it was read already."""
        if relative not in self.digests:
            self.digests[relative] = self.folder.file_sha256(relative)
        return self.digests[relative]

    def sealable_files(self) -> list[str]:
        """Every file of the folder that belongs in the seal, sorted."""
        return sorted(f for f in self.folder.list_files() if is_sealed(f))


def write_seal(folder: SweepFolder) -> str:
    """Seal the folder: write ``SHA256SUMS`` (atomically) for its files as they are now.

    Returns:
        The manifest's own SHA-256.
    """
    reader = FolderReader(folder)
    manifest = "".join(_line(reader.digest(f), f) for f in reader.sealable_files()).encode()
    folder.write_bytes(SEAL_FILE, manifest)
    return hashlib.sha256(manifest).hexdigest()


def check_seal(reader: FolderReader) -> SealCheck:
    """Compare the folder's files with its manifest: added, missing and changed files."""
    try:
        manifest = reader.folder.read_bytes(SEAL_FILE)
        sealed = parse_manifest(manifest)
    except ResultFileError as err:
        if reader.folder.exists(SEAL_FILE):
            return SealCheck(SEAL_FILE, found=False, error=str(err).split(": ", 1)[-1])
        why = "not found: the sweep did not finish, or was written before sweeps were sealed"
        return SealCheck(SEAL_FILE, found=False, error=why)
    present = set(reader.sealable_files())
    return SealCheck(
        file=SEAL_FILE,
        found=True,
        sha256=hashlib.sha256(manifest).hexdigest(),
        n_sealed=len(sealed),
        added=tuple(sorted(present - set(sealed))),
        missing=tuple(sorted(set(sealed) - present)),
        changed=tuple(sorted(f for f in sealed if f in present and reader.digest(f) != sealed[f])),
    )


def parse_manifest(manifest: bytes) -> dict[str, str]:
    """``SHA256SUMS`` lines -> ``{path: digest}``.

    Raises:
        ResultFileError: A line is not ``<64 hex digits>  <path>``.
    """
    sealed = {}
    try:
        lines = manifest.decode().split("\n")
    except UnicodeDecodeError:
        raise ResultFileError(SEAL_FILE, "not a sha256sum manifest (not UTF-8 text)") from None
    if lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        found = _LINE.fullmatch(line)
        if not found:
            raise ResultFileError(SEAL_FILE, f"line {number} is not '<sha256>  <path>'")
        escaped, digest, path = found.groups()
        sealed[_unescape(path) if escaped else path] = digest
    return sealed


def _line(digest: str, path: str) -> str:
    """One ``sha256sum`` line; a name holding a backslash or newline is escaped as it does."""
    if "\\" in path or "\n" in path:
        escaped = path.replace("\\", "\\\\").replace("\n", "\\n")
        return "\\" + f"{digest}  {escaped}\n"
    return f"{digest}  {path}\n"


def _unescape(path: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), path)
