"""Render the files of the compose stack that depend on the settings: ``deploy-monitoring.sh``'s Python side.

Why: Prometheus and Alertmanager read no environment variables, so the few values that
vary per installation (the app's scrape targets, the SLO objective, the basic-auth user
and the bcrypt hash of its password, SMTP and e-mail settings, the dead man's switch
URL) are written into copies of the committed files before ``docker-compose up``.

The rule this module owns: **a render never modifies a committed file.** The committed
files under ``deploy/`` are the templates and hold working defaults (promtool and the
tests read them as they are); every rendered file goes under the output directory
(``deploy/secrets/rendered/``, git-ignored), which docker-compose.monitoring.yml mounts:

==================================  ===============================================
``prometheus.yml``                  deploy/prometheus/prometheus.yml, basic-auth user
``prometheus-web.yml``              deploy/prometheus/web.yml, user and bcrypt hash
``alertmanager.yml``                deploy/alertmanager/alertmanager.yml, SMTP, e-mail
                                    recipients, watchdog URL
``targets/mpesa-mcp.json``          the app's scrape targets (MPESA_APP_TARGETS)
``rules/slo-objective.yml``         deploy/prometheus/rules/slo-objective.yml with
                                    MPESA_SLO_OBJECTIVE; mounted over the committed one
==================================  ===============================================

Standard library only (a bare monitoring host has no PyYAML): the templates mark the
lines to replace with a ``# rendered`` comment, so they are edited line by line and keep
their comments.

Usage (deploy-monitoring.sh passes the settings)::

    python3 deploy/render.py render --out deploy/secrets/rendered --targets app:5000 ...
    curl ... /api/v1/query | python3 deploy/render.py query-value
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

#: The repository: the templates are read from here, whatever the current directory.
ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
#: The watchdog receiver's placeholder URL in alertmanager.yml.
WATCHDOG_PLACEHOLDER = "http://deadmans-switch.invalid/ping"

#: Rendered files are read by the containers' non-root users (compose bind-mounts them
#: as they are); the secrets directory above them keeps other host users out.
FILE_MODE = 0o644
DIR_MODE = 0o755

_MARKED = re.compile(r"^(\s*(?:-\s+)?)([A-Za-z_]+):(\s*)(\S.*?)(\s+# rendered(?: \((\w+)\))?.*)$")
_SLO_EXPR = re.compile(r"(?m)^(\s*expr:\s*)vector\([^)]*\)[ \t]*$")
_OBJECTIVE = re.compile(r"^0\.[0-9]*[1-9][0-9]*$")


class RenderError(ValueError):
    """A template lacks what the render needs, or a value is unusable; the message says which."""


# --------------------------------------------------------------------------- pieces


def render_marked(text: str, *, by_key: Mapping[str, str | list[str]] | None = None,
                  variables: Mapping[str, str] | None = None, replace: Mapping[str, str] | None = None,
                  source: str = "template") -> str:
    """Replace the value of every line marked ``# rendered`` and return the new text.

    A line ``key: old  # rendered`` takes ``by_key[key]`` (a list gives its values to the
    marked lines of that key in order); ``key: old  # rendered (VAR)`` takes
    ``variables[VAR]``. ``true``/``false`` are written bare, anything else as a quoted
    string. Then each ``replace`` pair is applied to the whole text. Every marked line
    without a value and every ``replace`` key not found is reported in one RenderError.
    """
    queues = {key: list(value) if isinstance(value, list) else value for key, value in (by_key or {}).items()}
    variables = variables or {}
    out, missing = [], []
    for number, line in enumerate(text.splitlines(), 1):
        match = _MARKED.match(line)
        if match:
            indent, key, space, _old, comment, var = match.groups()
            if var:
                value = variables.get(var)
            else:
                value = queues.get(key)
                if isinstance(value, list):
                    value = value.pop(0) if value else None
            if value is None:
                missing.append(f"{source}:{number}: no value for {var or key}")
            else:
                rendered = value if value in ("true", "false") else json.dumps(value)
                line = f"{indent}{key}:{space or ' '}{rendered}{comment}"
        out.append(line)
    result = "\n".join(out) + "\n"
    for old, new in (replace or {}).items():
        if old not in result:
            missing.append(f"{source}: {old!r} not found")
        result = result.replace(old, new)
    if missing:
        raise RenderError("; ".join(missing))
    return result


def bcrypt_hash(password: str, user: str, old: str | None = None) -> str:
    """A bcrypt hash of ``password`` (cost 10); ``old`` is kept when it matches already.

    Keeping a matching hash means rendering again with the same password changes no
    file, so the deploy does not recreate the containers for nothing. Tries the bcrypt
    package, then the C library's crypt (glibc/libxcrypt know ``$2b$``), then htpasswd.
    """
    try:
        import bcrypt  # optional: python3-bcrypt

        if old and bcrypt.checkpw(password.encode(), old.encode()):
            return old
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # crypt is deprecated since 3.11, gone in 3.13
        try:
            import crypt
        except ImportError:
            crypt = None
    if crypt is not None:
        if old and crypt.crypt(password, old) == old:
            return old
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10))
        if hashed and hashed.startswith("$2"):
            return hashed
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-niBC", "10", user], input=password + "\n",
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return out.strip().split(":", 1)[1]
    raise RenderError("cannot make a bcrypt hash: install python3-bcrypt or apache2-utils")


def existing_hash(text: str | None, user: str) -> str | None:
    """The bcrypt hash of ``user`` in a rendered web config, or None."""
    if not text:
        return None
    match = re.search(r"^\s+\"?" + re.escape(user) + r"\"?:\s*\"?(\$2[aby]?\$[^\s\"]+)", text, re.M)
    return match.group(1) if match else None


def render_web_config(template: str, user: str, hashed: str, *, source: str = "web.yml") -> str:
    """The web config with ``basic_auth_users`` holding exactly ``user: hashed``."""
    out, in_users, done = [], False, False
    for line in template.splitlines():
        if re.match(r"^basic_auth_users:\s*$", line):
            in_users = True
            out.append(line)
            continue
        if in_users and re.match(r"^\s+\S+:\s*\S", line):
            if not done:
                out.append(f'  "{user}": "{hashed}"')
                done = True
            continue
        if in_users and line and not line.startswith((" ", "#")):
            in_users = False
        out.append(line)
    if not done:
        raise RenderError(f"no basic_auth_users entry in {source}")
    header = "# Rendered by deploy-monitoring.sh from deploy/prometheus/web.yml: edit that file.\n"
    return header + "\n".join(out) + "\n"


def split_targets(value: str) -> list[str]:
    """``"a:1, b:2,"`` -> ``["a:1", "b:2"]`` (blanks and empty entries dropped)."""
    return [target.strip() for target in value.split(",") if target.strip()]


def render_targets(targets: Iterable[str]) -> str:
    """A Prometheus file_sd document with one group of ``targets``."""
    return json.dumps([{"targets": list(targets), "labels": {}}], indent=2) + "\n"


def render_slo_objective(template: str, objective: str, *, source: str = "slo-objective.yml") -> str:
    """The SLO objective rule file with its one ``expr: vector(...)`` set to ``objective``."""
    if not _OBJECTIVE.match(objective):
        raise RenderError(f"invalid SLO objective {objective!r}: a ratio between 0 and 1, e.g. 0.995")
    new, count = _SLO_EXPR.subn(lambda m: f"{m.group(1)}vector({objective})", template)
    if count != 1:
        raise RenderError(f"expected one `expr: vector(...)` line in {source}, found {count}")
    return new


def query_value(answer: str) -> int:
    """The integer value of a one-sample Prometheus query answer; 0 for anything else."""
    try:
        result = json.loads(answer)["data"]["result"]
        return int(float(result[0]["value"][1])) if result else 0
    except (ValueError, KeyError, IndexError, TypeError):
        return 0


# --------------------------------------------------------------------------- files


def write_file(path: Path, text: str) -> bool:
    """Write ``text`` atomically (mode 0644, parents 0755); False when it was the same."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, DIR_MODE)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        os.chmod(path, FILE_MODE)
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)
    return True


def render_all(out: Path, *, targets: str, slo_objective: str, prometheus_user: str, prometheus_password_file: Path,
               smtp_from: str, smtp_smarthost: str, smtp_username: str, smtp_require_tls: str,
               email_to_critical: str, email_to_high: str, watchdog_url: str) -> list[tuple[Path, str]]:
    """Render every generated file under ``out``; ``(path, what it holds)`` for each.

    Everything is rendered in memory first, so a template problem leaves the files of
    the previous render as they were.
    """
    password = prometheus_password_file.read_text(encoding="utf-8").strip()
    web_path = out / "prometheus-web.yml"
    old_web = web_path.read_text(encoding="utf-8") if web_path.exists() else None
    hashed = bcrypt_hash(password, prometheus_user, existing_hash(old_web, prometheus_user))
    target_list = split_targets(targets)
    slo_template = PROMETHEUS_DIR / "rules" / "slo-objective.yml"
    files = [
        (out / "targets" / "mpesa-mcp.json", render_targets(target_list), ", ".join(target_list)),
        (out / "rules" / "slo-objective.yml",
         render_slo_objective(slo_template.read_text(encoding="utf-8"), slo_objective, source=str(slo_template)),
         f"objective {slo_objective}"),
        (out / "prometheus.yml",
         render_marked((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"),
                       variables={"PROMETHEUS_BASIC_AUTH_USER": prometheus_user},
                       source="deploy/prometheus/prometheus.yml"),
         f"basic-auth user {prometheus_user}"),
        (web_path, render_web_config((PROMETHEUS_DIR / "web.yml").read_text(encoding="utf-8"), prometheus_user,
                                     hashed, source="deploy/prometheus/web.yml"),
         "bcrypt hash of the password file"),
        (out / "alertmanager.yml",
         render_marked(ALERTMANAGER_YML.read_text(encoding="utf-8"),
                       by_key={"smtp_from": smtp_from, "smtp_smarthost": smtp_smarthost,
                               "smtp_auth_username": smtp_username, "smtp_require_tls": smtp_require_tls,
                               "to": [email_to_critical, email_to_high]},
                       replace={WATCHDOG_PLACEHOLDER: watchdog_url},
                       source="deploy/alertmanager/alertmanager.yml"),
         "SMTP, e-mail recipients, watchdog URL"),
    ]
    out.mkdir(parents=True, exist_ok=True)
    for path, text, _ in files:
        write_file(path, text)
    return [(path, what) for path, _, what in files]


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/render.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write every generated file under --out")
    render.add_argument("--out", type=Path, required=True, help="a git-ignored directory")
    for flag, setting in (("--targets", "MPESA_APP_TARGETS"), ("--slo-objective", "MPESA_SLO_OBJECTIVE"),
                          ("--prometheus-user", "PROMETHEUS_BASIC_AUTH_USER"),
                          ("--smtp-from", "ALERTMANAGER_SMTP_FROM"),
                          ("--smtp-smarthost", "ALERTMANAGER_SMTP_SMARTHOST"),
                          ("--smtp-username", "ALERTMANAGER_SMTP_USERNAME"),
                          ("--smtp-require-tls", "ALERTMANAGER_SMTP_REQUIRE_TLS"),
                          ("--email-to-critical", "ALERTMANAGER_EMAIL_TO_CRITICAL"),
                          ("--email-to-high", "ALERTMANAGER_EMAIL_TO_HIGH"),
                          ("--watchdog-url", "ALERTMANAGER_WATCHDOG_URL")):
        render.add_argument(flag, required=True, help=setting)
    render.add_argument("--prometheus-password-file", type=Path, required=True)
    commands.add_parser("query-value", help="print the value of a one-sample Prometheus query answer on stdin")
    args = parser.parse_args(argv)

    if args.command == "query-value":
        print(query_value(sys.stdin.read()))
        return 0
    options = {key: value for key, value in vars(args).items() if key not in ("command", "out")}
    try:
        written = render_all(args.out, **options)
    except (RenderError, OSError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    for path, what in written:
        print(f"   {path}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
