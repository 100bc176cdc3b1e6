"""Command line for the local stack.

    python -m stack setup            # resolve jars with Maven, build the Flink home
    python -m stack up [kafka s3 mosquitto]
    python -m stack status
    python -m stack down [--purge]   # --purge also deletes all data under VIGIL_HOME
    python -m stack env              # shell exports for flink / sql-client.sh
    python -m stack cluster up|down|status|jobs   # the local Flink standalone cluster
"""
from __future__ import annotations

import argparse
import secrets
import shlex
import shutil
import subprocess
import sys

from stack import flink_home
from stack.services import SERVICES, ServiceError
from stack.settings import PROJECT_ROOT, StackSettings


def resolve_jars(settings: StackSettings) -> None:
    """Download the Java parts from Maven Central into <home>/downloads (idempotent)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SystemExit("error: Maven (mvn) is not on PATH; it resolves the Flink, Kafka and s3proxy jars")
    cmd = [mvn, "-B", "-q", "-f", str(PROJECT_ROOT / "stack" / "maven" / "pom.xml"),
           f"-Dvigil.downloads={settings.downloads}", "generate-resources"]
    print(f"resolving jars from Maven Central into {settings.downloads} ...", flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit("error: Maven could not resolve the stack's jars (see the output above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="resolve jars and build the project-local Flink home")
    up = sub.add_parser("up", help="start services (default: kafka s3)")
    up.add_argument("services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(SERVICES)}")
    up.add_argument("--timeout", type=float, default=None, help="seconds to wait for each service")
    down = sub.add_parser("down", help="stop all services")
    down.add_argument("--purge", action="store_true", help="also delete all data under VIGIL_HOME")
    sub.add_parser("status", help="show which services answer")
    sub.add_parser("env", help="print shell exports for flink and sql-client.sh")
    sub.add_parser("cluster", help="the local Flink standalone cluster: up, down, status, jobs")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cluster"]:  # its own sub-commands and flags: stack/flink_cluster.py
        from stack.flink_cluster import cli

        return cli(argv[1:])
    args = parser.parse_args(argv)
    settings = StackSettings.from_env()

    if args.command == "setup":
        resolve_jars(settings)
        home = flink_home.build(settings)
        print(f"Flink home ready at {home}")
        secret = settings.home / "secrets" / "pseudonym.key"
        if not secret.exists():
            secret.parent.mkdir(parents=True, exist_ok=True)
            secret.touch(mode=0o600)
            secret.write_text(secrets.token_hex(32) + "\n")
            print(f"created the vehicle-id pseudonymisation secret {secret} (keep it; it is not printed)")
    elif args.command == "up":
        names = args.services or ["kafka", "s3"]
        unknown = [n for n in names if n not in SERVICES]
        if unknown:
            parser.error(f"unknown service(s) {unknown}; choose from {list(SERVICES)}")
        for name in names:
            service = SERVICES[name](settings)
            print(f"{name}: starting ...", flush=True)
            try:
                outcome = service.start(args.timeout)
            except ServiceError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"{name}: {outcome}, {service.address}", flush=True)
    elif args.command == "down":
        from stack.flink_cluster import LocalFlinkCluster

        if LocalFlinkCluster(settings).stop():
            print("flink cluster: stopped")
        for name, cls in SERVICES.items():
            stopped = cls(settings).stop()
            print(f"{name}: {'stopped' if stopped else 'not running'}")
        if args.purge and settings.home.exists():
            for name in [*SERVICES, "checkpoints", "savepoints", "flink-tmp", "tier", "models"]:
                shutil.rmtree(settings.home / name, ignore_errors=True)
            print(f"purged service data under {settings.home} (downloads and Flink home kept)")
    elif args.command == "status":
        for name, cls in SERVICES.items():
            print(f"{name:10s} {cls(settings).status()}")
    elif args.command == "env":
        for key, value in flink_home.environment(settings).items():
            print(f"export {key}={shlex.quote(value)}")
        print(f"export PATH={shlex.quote(str(settings.flink_home / 'bin'))}:\"$PATH\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
