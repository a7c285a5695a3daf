"""The ``mirror`` command: parses, calls the library, turns errors into messages and exit codes.

Exit codes: 0 in sync; 1 finished but something failed, a guard refused deletions, or
verify found differences; 2 usage or configuration error.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from mirror import __version__, api, logs, registry
from mirror import config as config_mod
from mirror.config import Config, TargetSettings
from mirror.driver import Driver
from mirror.engine import Mirror
from mirror.errors import ConfigError, GuardRefused, MirrorError, StateError, TargetBusy
from mirror.filters import Filter
from mirror.index_files import forgotten_setting, index_path, mirrored_as
from mirror.index_files import state_dir as resolve_state_dir
from mirror.layout import Layout
from mirror.logs import printable
from mirror.logs import setup as setup_logging
from mirror.policy import DeletePolicy
from mirror.progress import counted, human_bytes, human_duration
from mirror.redact import SecretFilter
from mirror.runner import TargetRunner
from mirror.wording import starved, summarize

if TYPE_CHECKING:
    # what only some commands need is imported by them: every start of `mirror run`
    # (from cron, say) would otherwise pay for it
    from mirror.alerts import Alerts
    from mirror.driver import RemoteEntry
    from mirror.index import IndexEntry
    from mirror.metrics import Metrics
    from mirror.plan import Plan
    from mirror.scan import LocalEntry
    from mirror.status import TargetStatus
    from mirror.verify import Difference

log = logging.getLogger("mirror")
#: set for the process a SIGHUP starts anew (_start_anew): it waits for a target another
#: process took in between, where a start by hand is refused at once
RESTARTED = "MIRROR_RESTARTED"
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
#: ctx.meta key: how to reload the service `mirror service status` looks at
RELOAD = "mirror.reload"


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    if logs.as_json():
        log.error("%s", message)
    else:
        click.echo(f"mirror: error: {message}", err=True)
    sys.exit(code)


@contextmanager
def user_errors(scrubber: SecretFilter | None = None) -> Iterator[None]:
    """Turn mirror's errors into one line and an exit code; never a traceback."""
    clean = scrubber.scrub if scrubber else (lambda s: s)
    try:
        yield
    except ConfigError as exc:
        fail(clean(str(exc)))
    except MirrorError as exc:
        fail(clean(str(exc)), EXIT_PROBLEM)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_PROBLEM)
    except BrokenPipeError:
        sys.exit(EXIT_PROBLEM)  # the reader went (mirror verify | head): stop, quietly
    except Exception as exc:
        if (why := starved(exc)) is not None:
            fail(why, EXIT_PROBLEM)  # no bug to report
        log.debug("internal error", exc_info=True)
        fail(
            f"internal error: {clean(f'{type(exc).__name__}: {exc}')} (run with -v for details, "
            "and please report it)",
            EXIT_PROBLEM,
        )


# -- shared options ----------------------------------------------------------------------
def config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where indexes live (default: the platform state folder, or $MIRROR_STATE_DIR).",
    )(f)
    f = click.option(
        "--target",
        "target_names",
        metavar="NAME",
        multiple=True,
        help="Only this target of the config (repeat for several).",
    )(f)
    f = click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Config file (TOML) with the source and named targets.",
    )(f)
    return f


def verbosity_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: one JSON object per line, for services and log collectors.",
    )(f)
    f = click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")(f)
    f = click.option("-v", "--verbose", count=True, help="Debug output. Never shows secrets.")(f)
    return f


def verbosity(verbose: int, quiet: bool) -> int:
    """-v (debug) or -q (warnings only) as a log level step; both at once is a usage error."""
    if verbose and quiet:
        raise click.UsageError("give -v or -q, not both")
    return 1 if verbose else -1 if quiet else 0


def build_config(
    source: str | None,
    target: str | None,
    config_path: Path | None,
    target_names: tuple[str, ...],
    state: Path | None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    known: bool = False,
) -> Config:
    """The config from a file or from SOURCE TARGET, with command-line overrides applied.
    ``environ``: where ``${VAR}`` is looked up (the process's environment); an
    :class:`Unresolved` one for commands that use no secret, which need no variable set.
    ``known``: SOURCE TARGET stands for what was mirrored there under any target name
    (a config's), for commands that report on it."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in ("layout", "delete"):
        if key in overrides:
            overrides[f"{key}_chosen"] = True
    if config_path is not None:
        if source or target:
            raise ConfigError("give either SOURCE TARGET or -c CONFIG, not both")
        cfg = config_mod.load(config_path, environ, target_names).select(target_names)
    elif source and target:
        if target_names:
            raise ConfigError("--target selects a target of a config file (-c); it needs -c")
        cfg = config_mod.ad_hoc(source, target, TargetSettings())
    elif source:
        ctx = click.get_current_context(silent=True)
        command = ctx.info_name if ctx is not None else "run"
        raise ConfigError(f"missing TARGET: mirror {command} SOURCE TARGET (or -c CONFIG)")
    else:
        default = Path("mirror.toml")
        if not default.exists():
            raise ConfigError("nothing to mirror: give SOURCE TARGET, or -c CONFIG (mirror init writes one)")
        cfg = config_mod.load(default, environ, target_names).select(target_names)
    if overrides:
        cfg = dataclasses.replace(
            cfg,
            targets=tuple(
                dataclasses.replace(t, settings=dataclasses.replace(t.settings, **overrides)) for t in cfg.targets
            ),
        )
    if state is not None:
        cfg = dataclasses.replace(cfg, state_dir=config_mod.real_path(state, "--state-dir"))
    if known and config_path is None and source:
        root = resolve_state_dir(cfg)
        cfg = dataclasses.replace(cfg, targets=tuple(mirrored_as(root, cfg.named_source, t) for t in cfg.targets))
    return cfg


def _layout(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Layout | None:
    if value is None:
        return None
    try:
        return Layout.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def placement_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Where files go on a target and what happens to those gone from the source: run
    needs them to act, verify to know what the target should hold."""
    f = click.option(
        "--delete",
        "delete",
        type=click.Choice([p.value for p in DeletePolicy]),
        callback=lambda _ctx, _param, value: DeletePolicy(value) if value else None,
        help="When a source file goes: mirror (delete it too, default), keep, or trash "
        "(move into .mirror-trash/DATE/ on the target).",
    )(f)
    f = click.option(
        "--layout",
        callback=_layout,
        metavar="LAYOUT",
        help="tree (default), flat, by-year, by-month, or a template like '{year}/{month}/{name}'.",
    )(f)
    return f


EPILOG = """\b
Examples:
  mirror run ./export /mnt/backup           mirror to a local folder, then watch
  mirror run ./export sftp://me@nas/backup  to an SFTP server
  mirror run -c mirror.toml                 every target of a config file
  mirror run -c mirror.toml --once          one full pass (for cron), then exit
"""


class MainGroup(click.Group):
    """The top-level commands; ``mirror service`` (and what it imports) loads on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "service"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "service":
            from mirror.service import service

            return service
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError:
            raise  # click's form, with the usage line and a pointer to --help
        except click.ClickException as exc:
            # from mirror auth and mirror service: one line in the form of every other
            # error of mirror's, where click wrote "Error: ..."
            fail(exc.format_message(), exc.exit_code)


@click.group(cls=MainGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mirror")
def main() -> None:
    """Keep targets (Dropbox, SFTP, S3, WebDAV, another disk, any fsspec filesystem)
    identical to a local folder, one way, within about a second of every change.

    Start with `mirror init` to write a config, or `mirror run SOURCE TARGET`.
    """


@main.command(epilog=EPILOG)
@click.argument("source", required=False)
@click.argument("target", required=False)
@config_options
@click.option("--once", is_flag=True, help="One full pass, then exit (no watching).")
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@placement_options
@click.option(
    "--max-delete",
    type=click.IntRange(min=0),
    metavar="N",
    help=(
        "Refuse a pass that would delete more than N files (default: half of the mirrored "
        "files). While watching, files that go within 2 s of each other count together."
    ),
)
@click.option("--rescan", is_flag=True, help="List the target too, not only the source and the index.")
@click.option(
    "--metrics-addr",
    metavar="HOST:PORT",
    help="Serve Prometheus/OpenMetrics metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9108).",
)
@verbosity_options
def run(
    source: str | None,
    target: str | None,
    config_path: Path | None,
    target_names: tuple[str, ...],
    state_dir: Path | None,
    once: bool,
    dry_run: bool,
    layout: Layout | None,
    delete: DeletePolicy | None,
    max_delete: int | None,
    rescan: bool,
    metrics_addr: str | None,
    verbose: int,
    quiet: bool,
    log_format: str,
) -> None:
    """Mirror SOURCE to TARGET (a path or URL), or the targets of a config file.

    Makes one full copy, then keeps every target current until stopped (Ctrl-C or
    SIGTERM). Only files mirror put on a target are ever deleted from it. The config
    is read at the start: after editing it, `kill -HUP` the process (`systemctl
    reload` for the service) to stop cleanly and start again with the config read anew.
    """
    scrubber = setup_logging(verbosity(verbose, quiet), log_format)
    signals = Signals()
    start_wait = StartWait(watching=not (once or dry_run), restarted=os.environ.pop(RESTARTED, None) == "1")
    # kept while a start waits for its state disk: the wait is an incident of every
    # target, announced after alert_after as any other, and its end a recovery
    alerts: Alerts | None = None
    again = True
    while again:
        with user_errors(scrubber):
            placement = {"layout": layout, "delete": delete, "max_delete": max_delete}
            cfg = build_config(source, target, config_path, target_names, state_dir, placement)
            cfg = dataclasses.replace(cfg, targets=tuple(t for t in cfg.targets if t.name not in start_wait.left))
            if config_path is None and source and target:
                _check_ad_hoc_target(cfg)
            for t in cfg.targets:
                scrubber.add(t.secrets)
            alerts = _alerts_for(cfg, dry_run, alerts)
            metrics: Metrics | None = None
            addr = None
            if metrics_addr or cfg.metrics_addr:
                from mirror.metrics import Metrics

                addr = config_mod.parse_addr(metrics_addr or cfg.metrics_addr or "")
                metrics = Metrics()
            edited = partial(build_config, source, target, config_path, target_names, state_dir, placement)
            if not (once or dry_run):
                signals.refuse_reload = partial(_reload_refused, edited, addr, metrics_addr is None)
            observers = [o for o in (alerts, metrics) if o is not None]
            opened = restart = waiting = False
            try:
                with api.running(cfg, observers=observers, dry_run=dry_run) as mirror:
                    opened = True
                    start_wait.over()
                    if metrics is not None and addr is not None:
                        metrics.attach(mirror)
                        metrics.serve(*addr)
                    code = _run(mirror, signals, once or dry_run, dry_run, rescan, quiet, log_format == "json")
                again = restart = _stopped(signals, watching=not (once or dry_run))
            except (StateError, TargetBusy) as exc:
                targets = [t.name for t in cfg.targets]
                again, code = start_wait.pause(exc, signals, opened, alerts, targets), EXIT_OK
                waiting = again and start_wait.told
            finally:
                if alerts is not None and not waiting:
                    _close_alerts(alerts, edited if restart else None)
                    alerts = None
                if metrics is not None:
                    metrics.close()
            if restart:
                again = _start_anew_unless_stopped(signals)
    sys.exit(code)


def _alerts_for(cfg: Config, dry_run: bool, kept: Alerts | None) -> Alerts | None:
    """The alerts of ``cfg``: ``kept`` through a wait for the state disk, else new ones;
    None when no target has any set up."""
    if kept is not None or dry_run or not any(t.settings.alerts for t in cfg.targets):
        return kept
    from mirror.alerts import Alerts  # only configs with alerts pay for its imports

    return Alerts(cfg)


def _reload_refused(
    edited: Callable[[], Config], serving: tuple[str, int] | None, addr_from_config: bool
) -> str | None:
    """Why the config as it is now cannot be started, if it cannot: a reload then keeps
    mirroring with the config read before. A typo stopped every target of the service,
    and the restarts systemd then made failed the same way, with no alert, since the
    alerts' settings were in the config that could not be read. ``serving``: the metrics
    address this process listens at itself, free again for the start after the reload;
    ``addr_from_config``: the config gives it (not --metrics-addr, which a reload keeps)."""
    try:
        cfg = edited()
        Mirror(cfg).check()
        wanted = config_mod.parse_addr(cfg.metrics_addr) if addr_from_config and cfg.metrics_addr else None
        if wanted is not None and wanted != serving:
            from mirror.metrics import check_free

            check_free(*wanted)
    except MirrorError as exc:
        return str(exc)
    return None


def _close_alerts(alerts: Alerts, reloading: Callable[[], Config] | None) -> None:
    """Finish the alerts; ``reloading``: the config a reload starts anew with, whose
    left-out targets' incidents end first."""
    if reloading is not None:
        with suppress(MirrorError):  # the new start tells what is wrong with the config
            alerts.retire(reloading().targets)
    alerts.close()


def _stopped(signals: Signals, watching: bool) -> bool:
    """Whether to start again (watch mode stopped on SIGHUP); said in the log, after the
    threads ended: from a shell or a service's log, Ctrl-C and SIGTERM otherwise leave no
    sign they were heard."""
    if not watching:
        return False
    if signals.restart():
        log.info("stopped on SIGHUP; starting again with the config read anew")
        return True
    log.info("stopped")
    return False


def _start_anew_unless_stopped(signals: Signals) -> bool:
    """Start anew after a SIGHUP, unless a stop was asked for since (False). A SIGTERM
    that came while the alerts closed (an on_failure command running on) was lost: the
    new start mirrored on until systemd killed it, pass and all."""
    if not signals.quitting():
        _start_anew()
    log.info("stopped, as asked while reloading")
    return False


def _start_anew() -> NoReturn:
    """Stopped on SIGHUP: start again as a new process, which reads the config anew.

    An upload still running after the stop's wait (a large file on a slow uplink) ends
    with this process, and the new start sends its file again. Waited for, it held back
    every target, an invoice written meanwhile included, for as long as it took (minutes);
    left running beside a new start in this process, it put back a file that start had
    deleted, recorded in no index, for good.
    """
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    # a second reload while the new process loads would end it: the config it reads next is the new one anyway
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.environ[RESTARTED] = "1"
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 - the same command
    except OSError as exc:
        fail(f"cannot start again after SIGHUP: {exc}; start mirror again", EXIT_PROBLEM)


class StartWait:
    """A start that cannot be made now. Watch mode that starts with a state folder it
    cannot write (its disk full), or finds a target taken by a one-off run (by any mirror,
    started again on SIGHUP), waits it out with backoff, told once, as a pass that meets a
    full disk mid-run does: it exited, and a service ended until someone restarted it. A
    one-off run leaves a target taken by a one-off run to it."""

    def __init__(self, watching: bool, restarted: bool) -> None:
        self.watching = watching
        #: started again on SIGHUP: a target taken meanwhile is waited for
        self.restarted = restarted
        self.wait = 1.0
        self.told = False
        #: what the log says once the wait is over
        self.back = ""
        #: the targets a one-off run leaves to the one-off run before it (cron runs overlapping)
        self.left: set[str] = set()

    def pause(
        self,
        exc: StateError | TargetBusy,
        signals: Signals,
        opened: bool,
        alerts: api.Observer | None,
        targets: Sequence[str],
    ) -> bool:
        """Wait before the next try; False when a signal to stop came meanwhile. Raises
        ``exc`` again for ``--once`` (cron tries again anyway), for a mirror that had
        opened its state (that one retries by itself), and for a target another watcher
        holds, unless this one started again on SIGHUP (started by hand, a second watcher
        is a mistake to tell at once). The first wait fails each of ``targets`` for
        ``alerts``: a service waiting out a full disk was told of in its log alone, and
        mirrored nothing meanwhile. A one-off run goes on at once without a target a one-off
        run took (that one reports its own result; refused, cron mailed an error every few
        minutes all through a long first copy), and ends when none is left."""
        if isinstance(exc, TargetBusy) and exc.ends and exc.target is not None and not (opened or self.watching):
            log.info("%s; left to it", exc.what)
            self.left.add(exc.target)
            return any(name not in self.left for name in targets)
        if opened or not self.watching or (isinstance(exc, TargetBusy) and not (self.restarted or exc.ends)):
            raise exc
        if not self.told:
            if isinstance(exc, TargetBusy):
                # a one-off run (cron's) took the target before this start, or, let go of on
                # SIGHUP, before this start took it again: ended, the service mirrored
                # nothing after that run (systemd's restart came only after a failure)
                hup = "started again on SIGHUP, but " if self.restarted else ""
                log.warning("%s%s; waiting for it, trying again every minute at most", hup, exc.what)
                self.back = "the targets are free again"
            else:
                log.warning("%s; waiting for that, trying again every minute at most", exc)
                self.back = "mirror's state can be written again"
            self.told = True
            if alerts is not None:
                for name in targets:
                    alerts.on_state(name, "failing", str(exc))
        else:
            log.debug("%s; trying again in %.0f s", exc, self.wait)
        pause = threading.Event()
        signals.handle(pause)
        if pause.wait(self.wait):
            again = signals.restart()
            if not again:
                log.info("stopped")
            return again
        self.wait = min(self.wait * 2, 60.0)
        return True

    def over(self) -> None:
        if self.told:
            log.info("%s; starting", self.back)
        self.told = False
        self.wait = 1.0


class Signals:
    """SIGTERM and SIGINT stop ``mirror run``; SIGHUP stops it to start again with the
    config read anew (``systemctl reload``). One for all the tries of a start (a state
    folder that cannot be written), so that a signal that comes between them is not lost."""

    def __init__(self) -> None:
        #: the signal that stopped the current start, if any
        self.received: int | None = None
        #: a SIGTERM or SIGINT came: never start again, whatever SIGHUP follows
        self._quit = False
        self._stop: threading.Event | None = None
        #: why the config as it is now cannot be started (None: it can): a SIGHUP then
        #: leaves the mirror running as it is
        self.refuse_reload: Callable[[], str | None] = lambda: None
        #: run from a terminal, SIGHUP is the terminal closing: a mirror started there
        #: would otherwise go on unseen, logging to nowhere, after its user logged out
        self._hangup_quits = sys.stdin.isatty() or sys.stderr.isatty()
        # taken from the start: until the mirror was opened, a SIGHUP ended it (status 129)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def handle(self, stop: threading.Event) -> None:
        """Set ``stop`` on these signals; at once if one came while mirror started."""
        self._stop = stop
        if self.received is not None:
            stop.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        reload = signum == signal.SIGHUP and not self._hangup_quits
        if reload and not self._quit and (why := self.refuse_reload()) is not None:
            log.error("not reloaded: %s; mirroring on with the config read before; fix it and reload again", why)
            return
        self.received = signum
        self._quit = self._quit or signum != signal.SIGHUP or self._hangup_quits
        if self._stop is not None:
            self._stop.set()

    def restarting(self) -> bool:
        """Whether a SIGHUP stopped this start to start again (and no stop was asked for)."""
        return self.received == signal.SIGHUP and not self._quit

    def quitting(self) -> bool:
        """Whether a stop was asked for (SIGTERM, Ctrl-C), even after a SIGHUP."""
        return self._quit

    def restart(self) -> bool:
        """Whether to start again (a SIGHUP stopped it, no stop was asked for); readies the next start."""
        again = self.restarting()
        self.received = None
        return again


def _run(
    mirror: Mirror, signals: Signals, once: bool, dry_run: bool, rescan: bool, quiet: bool, as_log: bool
) -> int:
    """``as_log``: the outcome goes out as log records (JSON logs), not as plain lines,
    so a log collector reads every line of it."""

    def problem(text: str) -> None:
        if as_log:
            log.warning("%s", text)
        else:
            click.echo(text, err=True)

    signals.handle(mirror.stop)
    if not once:
        # a service (no terminal) is stopped by its manager: no key to press there
        stop_how = "; press Ctrl-C to stop" if sys.stdin is not None and sys.stdin.isatty() else ""
        log.info("mirroring %s to %s%s", mirror.config.source, ", ".join(r.name for r in mirror.runners), stop_how)
        with progress(mirror, quiet or as_log):
            mirror.run_forever()
        return EXIT_PROBLEM if all(r.dead for r in mirror.runners) and signals.received is None else EXIT_OK
    with progress(mirror, quiet or dry_run or as_log):
        reports = mirror.run_once(listing=rescan)
    for report in reports:
        if dry_run and report.planned is not None:
            print_plan(report.target, report.planned)
        elif as_log:
            level = logging.INFO if report.ok else logging.WARNING
            log.log(level, "%s", summarize(report, named=False), extra={"target": report.target})
        elif report.error and not (report.uploaded or report.adopted or report.moved or report.deleted):
            pass  # "0 sent, 0 failed" above "target failed" reads as if nothing went wrong
        elif not quiet or not report.ok:
            click.echo(summarize(report), err=quiet)
        for src, reason in report.failed if not as_log else ():  # logged as they failed
            problem(f"{report.target}: failed: {printable(src)}: {printable(reason)}")
        if report.guard and not dry_run:  # the plan printed above says it
            problem(f"{report.target}: deletions withheld: {report.guard}")
        if report.error:
            problem(f"{report.target}: target failed: {report.error}")
    left_off = _left_off(mirror)
    for text in left_off:
        problem(text)
    if signals.received is not None:
        return EXIT_PROBLEM
    return EXIT_OK if all(r.ok for r in reports) and not left_off else EXIT_PROBLEM


def _left_off(mirror: Mirror) -> list[str]:
    """What a run left off every target beyond its failed items, a line for each kind:
    any of them makes it exit 1, as the target does not hold the whole source."""
    lines = []
    if mirror.unreadable:
        lines.append(
            f"{len(mirror.unreadable)} source folder(s) or file(s) could not be read; "
            "their copies stay on the targets until they can (see the warnings above)"
        )
    if mirror.unmirrorable:
        lines.append(
            f"{len(mirror.unmirrorable)} source file(s) cannot be mirrored as they are (see the warnings above)"
        )
    lines += [
        f"{name}: its include/exclude patterns take in none of the source's files (see the warning above)"
        for name in mirror.unmatched
    ]
    if mirror.unsettled:
        lines.append(
            f"{len(mirror.unsettled)} source file(s) kept changing and were left for the next run "
            "(see the warnings above)"
        )
    return lines


@contextmanager
def progress(mirror: Mirror, quiet: bool) -> Iterator[None]:
    """A progress bar on a terminal for long first copies; nothing otherwise."""
    if quiet or not sys.stderr.isatty():
        yield
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), transient=True
    )
    with bar:
        for runner in mirror.runners:
            task = bar.add_task(runner.name, total=None)
            runner.on_plan = lambda total, task=task: bar.update(task, total=total, completed=0)
            runner.on_done = lambda n, task=task: bar.advance(task, n)
        yield


def _check_ad_hoc_target(cfg: Config) -> None:
    """``mirror run SOURCE TARGET`` where a config's target mirrors the same place: its own
    index would know none of that target's files, and its layout and delete policy may
    differ (a by-year target got a second, tree-shaped copy of every file). Without
    --layout or --delete, also one it last mirrored with another (_refuse_forgotten_flags)."""
    root = resolve_state_dir(cfg)
    _refuse_forgotten_flags(cfg, root)
    for t in cfg.targets:
        known = mirrored_as(root, cfg.named_source, t)
        if known.name != t.name:
            raise ConfigError(
                f"{t.url} is mirrored from {cfg.source} as target {known.name!r} of a config; "
                f"run that (mirror run -c CONFIG --target {known.name}), so its layout and settings apply"
            )


def _refuse_forgotten_flags(cfg: Config, root: Path) -> None:
    """``mirror run SOURCE TARGET`` without --layout or --delete for a target it last
    mirrored with another, where the flag was only left out (a cron line typed anew)
    (index_files.forgotten_setting)."""
    for t in cfg.targets:
        if (forgotten := forgotten_setting(index_path(root, cfg.named_source, t), t.settings)) is None:
            continue
        key, value = forgotten
        now, what = (
            (t.settings.layout.name, "move every file there to that layout")
            if key == "layout"
            else (t.settings.delete.value, "change what happens to files removed from the source")
        )
        raise ConfigError(
            f"{t.url} was last mirrored with --{key} {value}; give --{key} {value} to go on, "
            f"or --{key} {now} to {what}"
        )


def print_plan(name: str, plan: Plan) -> None:
    def say(line: str) -> None:
        click.echo(printable(line))

    say(f"{name}: would do {counted(len(plan.moves) + len(plan.transfers) + len(plan.removals), 'action')}")
    for c in plan.cleanups:
        say(f"  remove temp  {c.dst}")
    for a in (*plan.moves, *plan.transfers):
        if aside := getattr(a, "aside", None):
            why = getattr(a, "keep", None) or f"not mirror's; {a.src} takes its place"
            say(f"  set aside    {a.dst} -> {aside}  ({why})")
    for m in plan.moves:
        say(f"  move         {m.old_dst} -> {m.dst}  ({m.reason})")
    for t in plan.transfers:
        if getattr(t, "unless_hash", None):
            # the run reads the file and compares its hash with the copy's first, which a
            # dry run leaves out: it reads no file
            say(f"  put or adopt {t.src} -> {t.dst}  ({t.reason}; not sent if the copy there has the same hash)")
            continue
        verb = "put" if t.__class__.__name__ == "Put" else "adopt"
        say(f"  {verb:12s} {t.src} -> {t.dst}  ({t.reason})")
    for r in plan.removals:
        what = getattr(r, "dst", r.src)
        say(f"  {r.__class__.__name__.lower():12s} {what}  ({r.reason})")
    for x in plan.refusals:
        say(f"  refuse       {x.src}  ({x.reason})")
    for k in plan.renamed:
        say(f"  keep         {k.dst}  (renamed in the source to {k.now}, which is not mirrored: {k.why})")
    if plan.guard:
        say(f"  deletions withheld: {plan.guard}")


@main.command()
@click.argument("source", required=False)
@click.argument("target", required=False)
@config_options
@placement_options
@verbosity_options
def verify(
    source: str | None,
    target: str | None,
    config_path: Path | None,
    target_names: tuple[str, ...],
    state_dir: Path | None,
    layout: Layout | None,
    delete: DeletePolicy | None,
    verbose: int,
    quiet: bool,
    log_format: str,
) -> None:
    """List each target and compare it with the source (size, and hash where the
    backend offers one). Prints every difference; exit 0 when identical, 1 when not.
    Files on a target that no source file accounts for are named too; mirror leaves
    them alone, so they are no difference.

    With SOURCE TARGET, the layout is the one `mirror run` last used on the target
    (--layout checks another; for an older mirror's index, which records none, the
    named layout that placed its files); give the --delete it had.
    """
    from mirror.scan import scan
    from mirror.verify import accounted_for, compare, compared, others, uploads

    scrubber = setup_logging(verbosity(verbose, quiet), log_format)
    differences = 0
    with user_errors(scrubber):
        placement = {"layout": layout, "delete": delete}
        cfg = build_config(source, target, config_path, target_names, state_dir, placement, known=True)
        mirror = Mirror(cfg, dry_run=True)
        mirror.open()
        try:
            snap = scan(cfg.source, mirror.filter)
            if why := mirror.source_unusable(snap):
                raise GuardRefused(
                    f"{why} Nothing was compared; mount it and verify again (if the folder moved on purpose, "
                    "run once with --rescan first)"
                )
            # files no target can hold as they are: not backed up, so never "identical"
            unmirrorable = [skip for skip in snap.skipped if skip.fix]
            for runner in mirror.runners:
                _patterns_last_run(runner, config_path is None and source is not None)
                local = {p: e for p, e in snap.entries.items() if runner.filter.wants_file(p)}
                index = runner.index.entries() if runner.index is not None else {}
                placed = runner.settings.layout
                if config_path is None and source and layout is None:
                    placed = _layout_last_run(runner, placed, index)
                try:
                    driver = runner.connect()
                    remote = runner.call(driver.list)
                except MirrorError as exc:
                    # one target down must not keep the others from being checked
                    click.echo(f"{runner.name}: cannot verify: {exc}")
                    differences += 1
                    continue
                if config_path is None and source and layout is None and not index:
                    placed = _layout_there(runner.name, placed, local, remote)
                found = compare(
                    local,
                    index,
                    remote,
                    placed,
                    runner.settings.delete,
                    driver.caps,
                    partial(_source_hash, driver, cfg.source),
                    {u for u in snap.unreadable if runner.wants_below(u)},
                    [skip for skip in unmirrorable if runner.filter.wants_file(skip.path)],
                    runner.stable_inodes,
                    excluded=snap.entries.keys() - local.keys() if runner.filter.narrows else (),
                )
                mend = _run_with_rescan(source, target, config_path, runner.name, state_dir, layout, delete)
                _tell_differences(runner.name, found, mend)
                accounted = accounted_for(local, index, placed, remote, driver.caps)
                if not found:
                    how = compared(driver.caps, remote, accounted)
                    click.echo(f"{runner.name}: identical ({counted(len(local), 'file')}; {how})")
                differences += len(found)
                if sending := uploads(remote):
                    click.echo(
                        f"{runner.name}: {counted(len(sending), 'upload')} under way, or left by a run that was "
                        "stopped (the next run removes those): " + ", ".join(printable(p) for p in sending[:5])
                    )
                extra = others(remote, accounted, driver.caps)
                if extra:
                    shown = ", ".join(printable(p) for p in extra[:5]) + (", ..." if len(extra) > 5 else "")
                    click.echo(
                        f"{runner.name}: {len(extra)} other file(s) on the target, from no file of the source "
                        f"(mirror leaves them alone): {shown}"
                    )
        finally:
            mirror.close()
    sys.exit(EXIT_PROBLEM if differences else EXIT_OK)


def _tell_differences(name: str, found: Sequence[Difference], mend: str) -> None:
    """Print verify's differences on target ``name``, and ``mend``, the command that sends
    what a run can send anew."""
    for diff in found:
        # under a layout a user knows the source path, and needs the target's too
        where = printable(diff.src)
        if diff.dst is not None and diff.dst != diff.src:
            where += f" -> {printable(diff.dst)}"
        click.echo(f"{name}: {where}: {printable(diff.problem)}")
    if any(diff.resent for diff in found):
        click.echo(f"{name}: to send what is missing or differs: {mend}")


def _run_with_rescan(
    source: str | None,
    target: str | None,
    config_path: Path | None,
    name: str,
    state_dir: Path | None,
    layout: Layout | None,
    delete: DeletePolicy | None,
) -> str:
    """The command that mends what verify found on target ``name``: a run that lists the
    target (a run that trusts the index finds nothing to do)."""
    words = ["mirror", "run"]
    if config_path is not None:
        words += ["-c", str(config_path), "--target", name]
    else:
        words += [str(source), str(target)]
        words += ["--layout", layout.name] if layout is not None else []
        words += ["--delete", delete.value] if delete is not None else []
    words += ["--state-dir", str(state_dir)] if state_dir is not None else []
    return shlex.join([*words, "--once", "--rescan"])


def _layout_last_run(runner: TargetRunner, default: Layout, index: Mapping[str, IndexEntry]) -> Layout:
    """The layout ``mirror run`` last used on this target, for a verify of SOURCE TARGET
    given no --layout: checked against the default, a target made by year would show
    every file missing. An older mirror recorded none: the index's rows tell it."""
    from mirror.verify import layout_of

    recorded = runner.index.get_meta("layout") if runner.index is not None else None
    if not recorded and index:
        told = layout_of(index, default)
        if told is None:
            click.echo(
                f"{runner.name}: the index records no layout (an older mirror wrote it), and most of its files "
                f"are not where the {default.name} layout puts them; give --layout as mirror run had it"
            )
        elif told != default:
            click.echo(
                f"{runner.name}: layout {told.name}, told from where the index has its files "
                "(an older mirror recorded none; --layout checks another)"
            )
            return told
        return default
    if not recorded or recorded == default.template:
        return default
    try:
        layout = Layout.parse(recorded)
    except ValueError:
        return default
    click.echo(f"{runner.name}: layout {layout.name}, which mirror run last used here (--layout checks another)")
    return layout


def _patterns_last_run(runner: TargetRunner, ad_hoc: bool) -> None:
    """For a verify of SOURCE TARGET (``ad_hoc``): the include/exclude patterns mirror run
    last used on the target (a config's target's, most often), which decide what the source
    holds for it: without them, each file they leave out was reported missing, at every check."""
    raw = runner.index.get_meta("patterns") if ad_hoc and runner.index is not None else None
    if raw:
        include, exclude = json.loads(raw)
        runner.filter = Filter(include, exclude)
        click.echo(f"{runner.name}: the include and exclude patterns mirror run last used here")


def _layout_there(
    name: str, default: Layout, local: Mapping[str, LocalEntry], remote: Mapping[str, RemoteEntry]
) -> Layout:
    """For a verify of SOURCE TARGET whose index this state folder lacks: the layout the
    target's files are in, so a target filled by year is not reported all missing."""
    from mirror.verify import layout_on

    told, _ = layout_on(local, remote, default)
    if told != default:
        click.echo(
            f"{name}: layout {told.name}, told from where the target has the source's files "
            "(this state folder holds no index of it; --layout checks another)"
        )
    return told


def _source_hash(driver: Driver, source: Path, src: str) -> str | None:
    return driver.local_hash(str(source / src))


@main.command()
@click.argument("source", required=False)
@click.argument("target", required=False)
@config_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(
    source: str | None,
    target: str | None,
    config_path: Path | None,
    target_names: tuple[str, ...],
    state_dir: Path | None,
    as_json: bool,
) -> None:
    """Per target: files and bytes mirrored, pending work, failed items with their
    last error, withheld deletions, a pass stopped before it finished, source files it
    cannot read or mirror, and the time of the last complete sync. Works while `mirror
    run` runs. Exit 0 when every target is in sync, 1 when one needs a look or none is
    found.

    Shows every target of the state folder; SOURCE TARGET or -c CONFIG picks theirs.
    """
    from mirror.index import iter_index_files
    from mirror.status import NEVER_RUN
    from mirror.status import read as read_status

    with user_errors():
        if config_path is not None or source is not None:
            environ = config_mod.Unresolved(os.environ)
            cfg = build_config(source, target, config_path, target_names, state_dir, environ=environ, known=True)
            root = resolve_state_dir(cfg)
            statuses = api.status(cfg)
            if any(s.state == NEVER_RUN for s in statuses):
                _tell_unset(cfg, environ.unset)
        else:
            root = config_mod.real_path(state_dir, "--state-dir") if state_dir else state_dir_default()
            statuses = [read_status(f) for f in iter_index_files(root)]
            for name in target_names:
                if not any(s.name == name for s in statuses):
                    raise ConfigError(f"no target named {name!r} has been mirrored (state folder: {root})")
            if target_names:
                statuses = [s for s in statuses if s.name in target_names]
    if as_json:
        click.echo(json.dumps([s.as_json() for s in statuses], indent=2))
    else:
        print_status(statuses, root)
        if config_path is not None:
            _tell_unread_config(statuses, config_path)
    # nothing found is no all-clear: a check run as another user than the service reads
    # another state folder, and must not report the service's targets as fine
    sys.exit(EXIT_OK if statuses and all(s.in_sync for s in statuses) else EXIT_PROBLEM)


def _tell_unset(cfg: Config, unset: Collection[str]) -> None:
    """Tell the variables not set here that name where the source, a target or the state
    lie, where a target was found never run: status showed '${NOPE}/export' and 'never
    run', exit 1, and said nothing of why. One in a secret only (a password) is no news:
    status uses none."""
    places = " ".join(map(str, (cfg.source, cfg.state_dir or "", *(t.url for t in cfg.targets))))
    named = sorted(name for name in unset if f"${{{name}}}" in places)
    if named:
        which = ", ".join(named)
        click.echo(
            f"mirror: environment variable {which} is not set here, so the paths that use it are shown as "
            f"written; export it as mirror's service has it (EnvironmentFile=) to see those targets",
            err=True,
        )


def _not_sent(s: TargetStatus) -> list[str]:
    """What of the source status knows is not on the target, nor on its way."""
    lines = []
    if s.left_out:
        lines.append(
            f"  left out: {s.left_out} source folder(s) or file(s) that cannot be read or mirrored "
            "as they are (mirror run names them)"
        )
    if s.silent and s.alive is not None:
        lines.append(
            f"  not responding: the mirror process has not said it is alive since {_when(s.alive)} "
            "(stopped, or stuck); restart it"
        )
    if s.restless:
        lines.append(
            f"  not sent: {s.restless} file(s) that have kept changing for a minute and more "
            "(the log names them; a log file belongs in exclude)"
        )
    return lines


def print_status(statuses: list[TargetStatus], root: Path) -> None:
    from mirror.status import RUNNING_ELSEWHERE, UNREAD

    if not statuses:
        click.echo(
            f"no targets have been mirrored yet (state folder: {root}); start with: mirror run SOURCE TARGET, "
            "or mirror run -c CONFIG"
        )
        return
    for s in statuses:
        last = _when(s.last_complete_sync) if s.last_complete_sync else "never"
        tried = f"; last attempt {_when(s.last_attempt)} failed" if s.last_attempt else ""
        click.echo(f"{s.name}: {s.url}  ({'running' if s.running else 'not running'}, {s.state}{tried})")
        if s.state in (*UNREAD, RUNNING_ELSEWHERE):
            click.echo(f"  {s.last_error}")  # what else it holds, this mirror cannot tell
            continue
        click.echo(f"  source:  {s.source}")
        # what is left is known to a running mirror alone: stopped, 'pending 0' read as
        # nothing left after a first copy cut short
        pending = f", pending {s.pending}" if s.running else ""
        click.echo(f"  files:   {s.files} ({human_bytes(s.bytes)}){pending}")
        click.echo(f"  last complete sync: {last}{_late(s)}")
        if s.stale and not (s.running or s.clock_ahead or s.last_complete_sync is None):
            # the never-synced case says so below (_unfinished); a target moved elsewhere
            # leaves its old index behind, flagged here for good
            click.echo(
                "  not running: mirror run brings it up to date, or if it is no longer a target of yours, "
                f"remove its index: rm {shlex.quote(s.index)}"
            )
        if s.watching:
            click.echo(f"  watching: by {s.watching}")
        if s.clock_ahead:
            click.echo(
                "  clock: it was ahead when mirror recorded this, so how old the copy is cannot be told; "
                "the next complete sync records the time anew"
            )
        for line in _not_sent(s):
            click.echo(line)
        if unfinished := _unfinished(s):
            click.echo(unfinished)
        if s.retrying:
            since = f" since {_when(s.retrying_since)}" if s.retrying_since else ""
            click.echo(f"  retrying{since}: {printable(s.retrying)}")
        if s.last_error:
            click.echo(f"  last error: {s.last_error}")
        if s.withheld:
            click.echo(f"  deletions withheld: {s.withheld}")
        for f in s.failures:
            # passes, not tries: each pass tried the item several times (its error says so)
            passes = f", in {f.attempts} passes" if f.attempts > 1 else ""
            click.echo(f"  failed: {printable(f.src)}: {printable(f.error)} (since {_when(f.first_at)}{passes})")


def _tell_unread_config(statuses: list[TargetStatus], config_path: Path) -> None:
    """Say so where the running mirror has not read the config since it changed: a target
    added showed as never run, and one removed, still mirrored, not at all."""
    from mirror.status import read_before

    reload = click.get_current_context().meta.get(RELOAD, "systemctl --user reload mirror")
    with suppress(OSError):  # build_config read it: gone since, nothing to tell
        if read_before(statuses, config_path.stat().st_mtime):
            click.echo(
                f"note: the running mirror has not read {config_path} since it changed, and mirrors the "
                f"targets it named before: reload it ({reload} for the service, or send the process SIGHUP)"
            )


def _late(s: TargetStatus) -> str:
    """What the line of the last complete sync adds: it lies ahead, or too far back."""
    if s.clock_ahead and s.last_complete_sync:
        return "  IN THE FUTURE"
    if s.stale:
        return f"  OLDER THAN EXPECTED (every {human_duration(s.expected_every)})"
    return ""


def _unfinished(s: TargetStatus) -> str | None:
    """The status line of a target whose last run, or every run, ended before a pass
    finished (an older mirror marked neither), or ended without stopping cleanly; of a
    running one, that it has not been in sync yet."""
    from mirror.status import INTERRUPTED, NEVER_RUN

    if s.running:
        return (
            "  not in sync yet: no pass to this target has ended without errors"
            if s.last_complete_sync is None
            else None
        )
    if s.incomplete:
        return "  incomplete: the last run ended before its pass finished; mirror run carries on"
    if s.state == INTERRUPTED and not s.never_synced:
        return "  ended without stopping cleanly (killed, or a crash): changes since wait for mirror run"
    if not s.never_synced or s.state == NEVER_RUN:
        return None
    then = "mirror run carries on"
    if not s.files:  # nothing on the target is known as mirror's: the index holds nothing to lose
        then = f"run mirror run, or if it is not a target of yours, remove its index: rm {shlex.quote(s.index)}"
    return f"  never in sync: no pass to this target has ended without errors yet; {then}"


def _when(timestamp: float) -> str:
    """A time with its zone: a service's log, a shell and a server's clock may each use another."""
    return dt.datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def state_dir_default() -> Path:
    return resolve_state_dir(Config(source=Path("."), targets=()))


STARTER = """\
# mirror configuration. Run with: mirror run -c {name}
# Paths are relative to this file. Secrets: write "${{VAR}}" and set VAR in the environment.

# The folder your program writes documents into. mirror never writes to it.
source = "./export"
# Prometheus metrics at http://127.0.0.1:9108/metrics (see "Metrics" in the README):
# metrics_addr = "127.0.0.1:9108"

[defaults]
# layout: tree (as-is), flat, by-year, by-month, or a template such as
# "{{year}}/{{month}}/{{name}}" (fields: year month day path name stem suffix parent).
layout = "tree"
# delete: mirror (remove from targets what leaves the source), keep, or trash.
delete = "mirror"
# exclude = ["*.bak", "drafts/"]   # gitignore-style patterns
# settle = "0.5s"                  # wait until a file stops changing
# rescan_interval = "1h"           # full comparison as a safety net
# max_delete = 100                 # refuse passes that would delete more
# Alerts when a target stays broken (see "Alerts" in the README):
# on_failure = 'echo "$MIRROR_REASON" | mail -s "mirror: $MIRROR_TARGET $MIRROR_EVENT" me@example.com'
# healthcheck_url = "https://hc-ping.com/your-check-uuid"
# alert_after = "15m"

[targets.backup]
# A local folder (another disk, a mounted share) ...
url = "./backup"

# ... or an SFTP server, checked against ~/.ssh/known_hosts:
# [targets.nas]
# url = "sftp://me@nas.example/srv/invoices"
# options = {{ key_filename = "~/.ssh/id_ed25519" }}

# ... or Dropbox (run `mirror auth dropbox --app-key KEY` first):
# [targets.dropbox]
# url = "dropbox://Invoices"
# options = {{ token_file = "~/.config/mirror/dropbox-token.json" }}

# A backend of your own, by configuration alone:
# [backends.nextcloud]
# protocol = "webdav"
# [backends.nextcloud.options]
# base_url = "https://cloud.example/remote.php/dav/files/me"
# username = "me"
# password = "${{NEXTCLOUD_PASSWORD}}"
# [targets.cloud]
# url = "nextcloud://Invoices"
"""


@main.command()
@click.argument("name", default="mirror.toml", metavar="[PATH]")
def init(name: str) -> None:
    """Write a commented starter config to PATH (default: mirror.toml; a folder: PATH/mirror.toml),
    making the folders it needs."""
    if not name.strip():
        fail("init: PATH is empty; give a file name such as mirror.toml, or leave it out")
    path, into = Path(name), ""
    if path.is_dir() or name.endswith(os.sep):
        path, into = path / "mirror.toml", f" ({name} is a folder: the config goes inside it)"
    if path.exists():
        fail(f"{path} already exists; choose another name or edit it")
    if file := next((above for above in path.parents if above.exists() and not above.is_dir()), None):
        fail(f"cannot write {path}: {file} is a file, not a folder; choose another path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot make the folder {path.parent} for {path}: {exc.strerror}")
    try:
        path.write_text(STARTER.format(name=path.name), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    click.echo(f"wrote {path}{into}; edit source and targets, then run: mirror run -c {path}")


@main.command()
def backends() -> None:
    """Every known backend, whether what it needs is installed, and how to install it."""
    for info in registry.known_backends():
        missing = info.missing()
        state = "installed" if not missing else f"missing: {info.install_hint() or ', '.join(missing)}"
        if not missing and registry.read_only(info):
            state = "installed, read-only: cannot be a target"
        names = "/".join((info.protocol, *info.aliases))
        click.echo(f"{names:24s} {info.summary:44s} {state}")
    for name, value in registry.shadowed_entry_points():
        summary = f"third-party backend ({value})"
        click.echo(f"{name:24s} {summary:44s} ignored: the built-in {name} takes its name")


class AuthGroup(click.Group):
    """``mirror auth BACKEND``: each backend module may ship a login command."""

    NAMES = ("dropbox", "gdrive", "onedrive")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.NAMES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.NAMES:
            return None
        try:
            module = importlib.import_module(f"mirror.backends.{cmd_name}_auth")
        except ImportError as exc:
            info = next(b for b in registry.BUILTINS if b.protocol == cmd_name)
            return _unavailable(cmd_name, f"{exc}; {info.install_hint()}")
        command = getattr(module, "command", None)
        return command if isinstance(command, click.Command) else None


def _unavailable(name: str, why: str) -> click.Command:
    @click.command(
        name=name,
        help=f"Log in to {name} (not available: {why}).",
        context_settings={"ignore_unknown_options": True},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        fail(f"mirror auth {name} is not available: {why}")

    return command


@main.group(cls=AuthGroup)
def auth() -> None:
    """Log in to a cloud backend and store its token (mode 0600)."""


def _utf8_names() -> None:
    """Start again in Python's UTF-8 mode where the locale's encoding is another one.

    File names are decoded with the locale's encoding otherwise: under ISO-8859-1 every
    name with an accent read differently than under UTF-8, so a run from such a shell
    moved each copy on the target to a garbled name, and with ASCII (LC_ALL=C and
    PYTHONUTF8=0) such names were refused as undecodable and their copies deleted. The
    index holds names as UTF-8, so they are read as UTF-8 whatever the locale.
    """
    if sys.flags.utf8_mode or sys.getfilesystemencoding().lower().replace("-", "") == "utf8":
        return
    if os.environ.get("MIRROR_UTF8_RESTART"):
        return  # an interpreter option of the user's (-X utf8=0) won over ours: run as is
    os.environ["MIRROR_UTF8_RESTART"] = "1"
    os.execv(sys.executable, [sys.executable, "-X", "utf8", *sys.orig_argv[1:]])  # noqa: S606 - the same command


def _standard_streams() -> None:
    """Open /dev/null on a closed stdin, stdout or stderr (a wrapper's ``<&-`` or ``>&-``).

    Python leaves ``sys.stdout`` as None then, and the first write or ``isatty()`` failed
    with a traceback; and the first file mirror opened (an index's lock) took descriptor
    1, where anything writing to standard output would have landed.
    """
    for fd, mode in ((0, "r"), (1, "w"), (2, "w")):
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_RDWR), fd)
            setattr(sys, ("stdin", "stdout", "stderr")[fd], open(fd, mode, closefd=False))  # noqa: SIM115


def _raise_open_files_limit() -> None:
    """Raise the soft limit of open files towards the hard one: each worker of each target
    keeps a batch of source files open, so 6 SFTP targets went past the usual 1,024 and
    files failed with 'Too many open files'. At most 8,192 keeps descriptor numbers where
    select()-based libraries still work."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def entry() -> NoReturn:
    """The ``mirror`` command: :func:`main`, then an exit without the interpreter's teardown.

    Once a command has returned, everything that matters is closed: the indexes
    committed and unlocked, the connections shut. Tearing down the interpreter after
    that (every module, the SSH transports, the cryptography bindings) only costs time:
    about 30 ms after a local run and 80 ms after an SFTP one, a tenth of a no-change
    run. Only the output buffers are left to write out, and this writes them.
    """
    _utf8_names()
    _standard_streams()
    _raise_open_files_limit()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(bool(exc.code))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe (mirror status | head)
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
