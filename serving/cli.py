"""``aeguard serve``, ``aeguard models import|list`` and ``aeguard bench-serve``.

Nothing heavy is imported at module load (the main CLI imports this module for every command): bentoml,
httpx and onnxruntime are imported inside the commands that need them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

SERVICE_TARGET = "aeguard.serving.service:AeguardService"

models_app = typer.Typer(name="models", help="Import aeguard artifacts into the BentoML model store and list them.",
                         no_args_is_help=True, add_completion=False)


def serve_env(artifacts: list[str], workers: int = 1, device: str | None = None, max_rows: int | None = None,
              max_body_bytes: int | None = None, access_log: bool = True,
              base: dict[str, str] | None = None, trusted_keys: Path | None = None) -> dict[str, str]:
    """The environment that configures the service (see :mod:`aeguard.serving.settings`)."""
    env = dict(os.environ if base is None else base)
    env["AEGUARD_ARTIFACTS"] = ",".join(artifacts)
    env["AEGUARD_WORKERS"] = str(workers)
    env["AEGUARD_ACCESS_LOG"] = "1" if access_log else "0"
    if device is not None:
        env["AEGUARD_DEVICE"] = device
    if max_rows is not None:
        env["AEGUARD_MAX_ROWS"] = str(max_rows)
    if max_body_bytes is not None:
        env["AEGUARD_MAX_BODY_BYTES"] = str(max_body_bytes)
    if trusted_keys is not None:
        env["AEGUARD_TRUSTED_KEYS"] = str(Path(trusted_keys).resolve())
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    return env


def serve_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", SERVICE_TARGET, "--host", host, "--port", str(port)]


def check_serve_config(env: dict[str, str]) -> list[str]:
    """Fail here, with one line, on what would otherwise crash every worker at start-up."""
    from aeguard.core.artifact import read_manifest
    from aeguard.serving.settings import Settings
    from aeguard.serving.store import resolve_all

    settings = Settings.from_env(env)
    resolved = resolve_all(settings.artifacts)
    for model in resolved:  # each worker checks again when it loads (signatures too, from the same env)
        read_manifest(model.path, verify=True, trusted_keys=env.get("AEGUARD_TRUSTED_KEYS") or None)
    return [f"{m.name} ({m.source}, version {m.version})" for m in resolved]


def serve(
    artifacts: list[str] = typer.Argument(..., metavar="ARTIFACT...",
                                          help="Artifact folders or model-store tags; ALIAS=... renames one. "
                                               "The first is the default model."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 for every interface)."),
    port: int = typer.Option(3000, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (one onnxruntime session each)."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda (default: $AEGUARD_DEVICE or auto)."),
    max_rows: int = typer.Option(None, "--max-rows", min=1, help="Rows per request (default 10000)."),
    max_body_bytes: int = typer.Option(None, "--max-body-bytes", min=64, help="Request body limit in bytes."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log one line per request."),
    trusted_keys: Path = typer.Option(None, "--trusted-keys", envvar="AEGUARD_TRUSTED_KEYS", show_envvar=True,
                                      help="Folder of Ed25519 *.pub keys: refuse artifacts not signed by one."),
) -> None:
    """Serve artifacts over HTTP with BentoML (`/score`, `/score_csv`, `/models`); API key from $AEGUARD_API_KEY."""
    env = serve_env(artifacts, workers=workers, device=device, max_rows=max_rows, max_body_bytes=max_body_bytes,
                    access_log=access_log, trusted_keys=trusted_keys)
    described = check_serve_config(env)
    key = "on ($AEGUARD_API_KEY)" if env.get("AEGUARD_API_KEY") else "off (set AEGUARD_API_KEY to require one)"
    signed = f"; signatures required ({trusted_keys})" if trusted_keys else ""
    err_console.print(f"serving {', '.join(described)} on http://{host}:{port} with {workers} worker(s); "
                      f"API key {key}{signed}", highlight=False)
    command = serve_command(host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)  # the server keeps this PID, so stopping it by PID stops the server


@models_app.command("import")
def models_import(
    artifact: Path = typer.Argument(..., help="Artifact folder to copy into the model store."),
    name: str = typer.Option(None, "--name", help="Model-store name (default: the folder name)."),
) -> None:
    """Save an artifact in the BentoML model store, with its manifest as metadata."""
    from aeguard.serving.store import import_artifact

    model = import_artifact(artifact, name)
    console.print(f"imported {artifact} as [bold]{model.tag}[/] (serve it with `aeguard serve {model.tag}`)")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON records.")) -> None:
    """List the aeguard artifacts in the BentoML model store."""
    from aeguard.serving.store import list_store_models

    rows = []
    for m in list_store_models():
        meta = m.info.metadata
        rows.append({"tag": str(m.tag), "detector": meta.get("detector"), "n_features": meta.get("n_features"),
                     "threshold": meta.get("threshold"), "created": m.info.creation_time.isoformat(timespec="seconds")})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("tag", "detector", "features", "threshold", "created")
    for r in rows:
        table.add_row(r["tag"], str(r["detector"]), str(r["n_features"]), f"{r['threshold']:.6g}", r["created"])
    console.print(table)


def _int_list(value: str, flag: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{flag} takes integers separated by commas, got {value!r}") from None
    if not numbers or min(numbers) < 1:
        raise typer.BadParameter(f"{flag} takes integers >= 1, got {value!r}")
    return numbers


def bench_serve(
    artifact: str = typer.Argument(..., help="Artifact folder (or model-store tag) to serve and measure."),
    requests: int = typer.Option(1000, "--requests", min=1, help="Timed requests per measurement."),
    concurrency: str = typer.Option("1", "--concurrency", help="Requests in flight at once (a comma list runs "
                                                               "each, e.g. 1,8)."),
    rows_per_request: str = typer.Option("1", "--rows-per-request", help="Rows in each good request (a comma "
                                                                         "list runs each, e.g. 1,256,4096)."),
    body: str = typer.Option("records", "--body", help="Request body forms, comma-separated: records, columns, "
                                                       "values, arrow (Arrow in and out), npy."),
    duration: float = typer.Option(None, "--duration", min=0.1, help="Stop each measurement after this many "
                                                                     "seconds (or --requests, if sooner)."),
    rounds: int = typer.Option(1, "--rounds", min=1, help="Split each measurement into rounds that alternate "
                                                          "between the servers (evens out load from elsewhere)."),
    url: str = typer.Option(None, "--url", help="Target a running aeguard server instead of starting one."),
    reference: bool = typer.Option(None, "--reference/--no-reference",
                                   help="Also measure the plain-Starlette reference endpoint on the same artifact "
                                        "(default: when this command starts the servers and sends no bad input)."),
    reference_url: str = typer.Option(None, "--reference-url", help="A running reference endpoint "
                                                                    "(python -m aeguard.serving.reference)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Workers of the servers this command starts."),
    bad_fraction: float = typer.Option(0.0, "--bad-fraction", min=0.0, max=1.0,
                                       help="Share of requests with bad input (mixed good/bad load)."),
    max_rows: int = typer.Option(None, "--max-rows", min=1, help="AEGUARD_MAX_ROWS of the started server."),
    max_body_bytes: int = typer.Option(None, "--max-body-bytes", min=64,
                                       help="AEGUARD_MAX_BODY_BYTES of the started server."),
    api_key: str = typer.Option(None, "--api-key", envvar="AEGUARD_API_KEY", show_envvar=True,
                                help="API key to send (and to require, on a server this command starts)."),
    burst_seconds: float = typer.Option(0.0, "--burst-seconds", min=0.0,
                                        help="Add the burst phase: single-row latency before and right after this "
                                             "many seconds of 256-row requests at C=8 (0: skip it)."),
    seed: int = typer.Option(0, "--seed"),
    output: Path = typer.Option(None, "-o", "--output", help="Append each result as one JSON line to this file."),
    report: Path = typer.Option(None, "--report", help="Write the results as Markdown tables to this file."),
) -> None:
    """Load-test /score on loopback against the plain-Starlette ceiling: rows/s, requests/s, p50/p99, CPU per
    request, (a)/(b) ratios, served/raw onnxruntime, errors."""
    from aeguard.serving.bench import BODY_KINDS, BenchConfig, markdown_report, run_bench

    bodies = tuple(b.strip() for b in body.split(",") if b.strip())
    unknown = [b for b in bodies if b not in BODY_KINDS]
    if unknown or not bodies:
        raise typer.BadParameter(f"unknown body form(s) {unknown}; choose from {list(BODY_KINDS)}")
    config = BenchConfig(artifact=artifact, requests=requests, concurrency=_int_list(concurrency, "--concurrency"),
                         rows_per_request=_int_list(rows_per_request, "--rows-per-request"), bodies=bodies, url=url,
                         reference=reference, reference_url=reference_url, workers=workers,
                         bad_fraction=bad_fraction, max_rows=max_rows, max_body_bytes=max_body_bytes,
                         api_key=api_key, seed=seed, duration_s=duration, rounds=rounds,
                         burst_s=burst_seconds)
    results = run_bench(config, log=lambda msg: err_console.print(msg, highlight=False))
    table = Table("body", "R", "C", "rows/s", "req/s", "p50 ms", "p99 ms", "errors", "5xx", "(a)/(b) rows",
                  "served/raw", "CPU (a)/(b)", title=f"bench-serve {artifact}")
    for r in results:
        if r["phase"] == "grid":
            table.add_row(r["body"], str(r["rows_per_request"]), str(r["concurrency"]), f"{r['rows_per_s']:.4g}",
                          f"{r['requests_per_s']:.4g}", f"{r['p50_ms']:.3g}", f"{r['p99_ms']:.3g}", str(r["errors"]),
                          str(r["server_errors_5xx"]), _maybe(r.get("rows_ratio")), f"{r['served_to_raw']:.3g}",
                          _maybe(r.get("cpu_ratio")))
    console.print(table)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a") as fh:
            for r in results:
                fh.write(json.dumps(r) + "\n")
        err_console.print(f"appended {len(results)} result(s) to {output}")
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(markdown_report(results))
        err_console.print(f"wrote {report}")
    if any(r.get("errors") for r in results) or any(r.get("scores_agree") is False for r in results):
        raise typer.Exit(1)


def _maybe(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _fault_server(artifact: str, workers: int, api_key: str | None) -> tuple[object, dict]:
    from aeguard.core.artifact import read_manifest
    from aeguard.serving.bench import LocalServer
    from aeguard.serving.store import ModelRef, resolve

    manifest = read_manifest(resolve(ModelRef.parse(artifact)).path)
    env = {"AEGUARD_API_KEY": api_key} if api_key else {}
    server = LocalServer([artifact], workers=workers, env=env, extra_args=["--no-access-log"])
    server.wait_ready()
    return server, manifest


def _report(result: dict, output: Path | None) -> None:
    print(json.dumps(result, indent=2))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a") as fh:
            fh.write(json.dumps(result) + "\n")


def fault_kill(
    artifact: str = typer.Argument(..., help="Artifact folder (or model-store tag) to serve."),
    workers: int = typer.Option(2, "--workers", min=2, help="Worker processes of the started server."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight at once."),
    before: float = typer.Option(3.0, "--before", min=0.5, help="Seconds of load before the kill."),
    after: float = typer.Option(12.0, "--after", min=1.0, help="Seconds of load after the kill."),
    bad_fraction: float = typer.Option(0.3, "--bad-fraction", min=0.0, max=1.0, help="Share of bad requests."),
    api_key: str = typer.Option(None, "--api-key", envvar="AEGUARD_API_KEY", help="Key to require and send."),
    output: Path = typer.Option(None, "-o", "--output", help="Append the result as one JSON line to this file."),
) -> None:
    """SIGKILL one worker of a real `aeguard serve` under bounded load: failed requests, worker back, recovery."""
    from aeguard.serving.faults import mixed_plan, worker_kill

    server, manifest = _fault_server(artifact, workers, api_key)
    try:
        plan = mixed_plan(manifest, int((before + after) * 4000), bad_fraction=bad_fraction, api_key=api_key)
        result = {"kind": "fault-kill", "artifact": artifact, "concurrency": concurrency,
                  **worker_kill(server, plan, concurrency=concurrency, before_s=before, after_s=after)}
    finally:
        server.stop()
    _report(result, output)
    if result["worker_back_s"] is None or not result["server_alive"]:
        raise typer.Exit(1)


def soak_cmd(
    artifact: str = typer.Argument(..., help="Artifact folder (or model-store tag) to serve."),
    duration: float = typer.Option(300.0, "--duration", min=1.0, help="Seconds of measured load."),
    workers: int = typer.Option(2, "--workers", min=1, help="Worker processes of the started server."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight at once."),
    bad_fraction: float = typer.Option(0.5, "--bad-fraction", min=0.0, max=1.0, help="Share of bad requests."),
    max_growth: float = typer.Option(10.0, "--max-rss-growth", help="Fail when RSS grows more than this (%)."),
    output: Path = typer.Option(None, "-o", "--output", help="Append the result as one JSON line to this file."),
) -> None:
    """Mixed good/bad load on a real `aeguard serve` for DURATION seconds: RSS start/end, requests/s, errors."""
    from aeguard.serving.faults import mixed_plan, soak

    server, manifest = _fault_server(artifact, workers, None)
    try:
        plan = mixed_plan(manifest, int((duration + 20) * 3000), bad_fraction=bad_fraction)
        result = {"kind": "soak", "artifact": artifact, "workers": workers, "concurrency": concurrency,
                  "bad_fraction": bad_fraction, **soak(server, plan, duration_s=duration, concurrency=concurrency)}
    finally:
        server.stop()
    _report(result, output)
    if result["failed"] or result["rss_growth_pct"] > max_growth:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("bench-serve")(bench_serve)
    app.command("fault-kill")(fault_kill)
    app.command("soak")(soak_cmd)
    app.add_typer(models_app, name="models")
