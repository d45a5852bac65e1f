"""F1: credentials never ship, whatever the ignore files say and however they are linked."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from flash_runtime.pack import build
from flash_runtime.pack.files import CREDENTIAL_PATTERNS, collect_files, is_credential

SECRETS = [
    "id_rsa",
    "id_ed25519",
    ".ssh/config",
    "certs/server.pem",
    "tls.key",
    "store.p12",
    "app.jks",
    ".aws/credentials",
    ".netrc",
    ".pypirc",
    ".npmrc",
    ".docker/config.json",
    "deploy/kubeconfig",
    "credentials.json",
    "service-account-prod.json",
    "config/secrets.yaml",
    ".htpasswd",
    "infra/terraform.tfstate",
    ".bash_history",
]


def test_no_credential_ships_and_the_build_says_what_it_kept_out(tmp_path: Path) -> None:
    project = tmp_path / "leaky"
    (project / "lib").mkdir(parents=True)
    (project / "w.py").write_text(
        "from runpod_flash import Endpoint\n\n\n@Endpoint(name='w', cpu='cpu3c-1-2')\n"
        "def w() -> dict:\n    return {}\n"
    )
    for rel in SECRETS:
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("SECRET-" + rel)
    # Every way a user might try to ship them anyway:
    (project / ".flashignore").write_text("".join(f"!{rel}\n" for rel in SECRETS) + "!.ssh/\n")
    (project / ".gitignore").write_text("!id_rsa\n")
    os.symlink("id_rsa", project / "innocent.txt")  # a link with a harmless name
    os.symlink("../tls.key", project / "lib" / "data.bin")
    (project / "README.md").write_text("ships")

    result = build(project, skip_deps=True)
    with tarfile.open(result.artifact) as tar:
        names = tar.getnames()
        contents = b"".join(
            f.read() for m in tar.getmembers() if m.isfile() and (f := tar.extractfile(m))
        )
    assert "./README.md" in names or "README.md" in names
    assert b"SECRET-" not in contents, [n for n in names if "README" not in n]
    warning = next(w for w in result.warnings if "look like credentials" in w)
    assert f"kept out {len(SECRETS) + 2} file(s)" in warning  # .ssh/ and .aws/ as one each
    withheld = collect_files(project).withheld
    assert {"innocent.txt", "lib/data.bin", ".ssh/", ".aws/", "id_rsa"} <= set(withheld)


def test_the_patterns_match_at_any_depth() -> None:
    assert all(is_credential(rel) for rel in SECRETS)
    assert is_credential("deep/er/.ssh", is_dir=True) and is_credential("x/.aws", is_dir=True)
    assert not any(is_credential(rel) for rel in ("main.py", "keys.py", "README.md", "pem.txt"))
    assert len(CREDENTIAL_PATTERNS) == len(set(CREDENTIAL_PATTERNS))
