"""The command line around the data dir: `--data-dir` anywhere, `gateway pki` refusals, and the
modes of what the commands create (data dir 0700, `nodeset build` output 0644)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from cryptography import x509

from gateway.cli import main
from gateway.security.pki_files import PkiPaths, cert_file_name, save_rejected

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusing the command line
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("where", ["top", "group", "action"])
def test_data_dir_before_or_after_the_sub_command(tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = str(tmp_path / "demo-data")

    def argv(group: str, *action: str) -> list[str]:
        opt = ["--data-dir", data]
        return {"top": [*opt, group, *action], "group": [group, *opt, *action], "action": [group, *action, *opt]}[where]

    code, _, err = run(argv("users", "add", "op1", "--role", "operator", "--password-stdin"), capsys, monkeypatch,
                       "op-secret-1\n")
    assert code == 0, err
    assert (tmp_path / "demo-data" / "users.yaml").is_file()
    assert not (tmp_path / "gateway-data").exists()
    assert (tmp_path / "demo-data").stat().st_mode & 0o777 == 0o700
    code, out, err = run(argv("users", "list"), capsys, monkeypatch)
    assert (code, out) == (0, "op1\toperator\n"), err
    (tmp_path / "demo-data" / "pki").mkdir()
    code, out, err = run(argv("pki", "list"), capsys, monkeypatch)
    assert code == 0 and "trusted (0):" in out, err


def test_pki_trust_names_what_it_cannot_find_or_tell_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    paths = PkiPaths(tmp_path / "pki")
    for folder in paths.folders():
        folder.mkdir(parents=True, exist_ok=True)
    certs = [_self_signed("twin"), _self_signed("twin"), _self_signed("single")]
    for cert in certs:
        save_rejected(paths, cert)
    data = ["--data-dir", str(tmp_path)]
    code, _, err = run(["pki", "trust", "no-such-client", *data], capsys, monkeypatch)
    assert code == 1 and "no certificate in" in err and "no-such-client" in err
    code, _, err = run(["pki", "trust", "twin", *data], capsys, monkeypatch)
    assert code == 1 and "matches 2 certificates" in err, err
    assert not list(paths.trusted.glob("*.der")), "nothing moved on an ambiguous name"
    code, _, err = run(["pki", "trust", "abc", *data], capsys, monkeypatch)  # under 4 characters: no prefix match
    assert code == 1
    first = cert_file_name(certs[0])
    code, _, err = run(["pki", "trust", first, *data], capsys, monkeypatch)
    assert code == 0, err
    assert (paths.trusted / first).is_file() and not (paths.rejected / first).exists()
    code, _, err = run(["pki", "trust", str(tmp_path / "missing.der"), *data], capsys, monkeypatch)
    assert code == 1
    not_a_cert = tmp_path / "notes.txt"
    not_a_cert.write_text("hello")
    code, _, err = run(["pki", "trust", str(not_a_cert), *data], capsys, monkeypatch)
    assert code == 1 and "neither a certificate nor a revocation list" in err


def _self_signed(cn: str) -> x509.Certificate:
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    global _KEY
    if _KEY is None:
        _KEY = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(_KEY.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(_KEY, hashes.SHA256()))


_KEY = None


def test_nodeset_build_output_is_readable_by_the_service_user(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out_file = tmp_path / "site.xml"
    old = os.umask(0o022)
    try:
        code, _, err = run(["nodeset", "build", str(ROOT / "nodesets" / "examples" / "sim-site.yaml"), "-o",
                            str(out_file)], capsys, monkeypatch)
    finally:
        os.umask(old)
    assert code == 0, err
    assert out_file.stat().st_mode & 0o777 == 0o644
