# Resuming after an interruption. SIGINT or SIGTERM: the run stops its jobs
# and exits; the jobs that completed are kept. `kill -9`: its lock files name
# no owner, so each executing run records itself and its jobs
# (.snakemake/owners/) and a later run removes a lock whose recorded owners all
# died, after stopping their orphaned jobs, keeping the outputs of those that
# finished (see workflow/lib/recovery.py). Parse time is before Snakemake checks the locks;
# included first, ahead of config validation: it concerns the directory.
import atexit
import importlib.util

from snakemake.logging import logger

_spec = importlib.util.spec_from_file_location(
    "manifold_metric_workflow_recovery",
    os.path.join(workflow.basedir, "workflow", "lib", "recovery.py"),
)
_recovery = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_recovery)

# Only the process started by the user: jobs parse this file again on Slurm's
# compute nodes (`--mode remote`) or in a job step (`--mode subprocess`).
if workflow.is_main_process:
    _args = _recovery.cli_args()
    _mode = _recovery.run_mode(_args)
    try:
        _recovery.recover(os.getcwd(), _mode, log=logger.warning)
        if _mode in ("execute", "unknown"):  # runs that may take locks
            _record = _recovery.record_owner(
                os.getcwd(),
                executor=_recovery.executor(_args),
                profile=getattr(_args, "profile", None) or (),
                logfiles=workflow.logger_manager.get_logfile(),
            )
            atexit.register(_recovery.remove_record, _record, os.getpid())
            # Local jobs are this process's children: SIGINT and SIGTERM stop
            # them within seconds and name them (see Interrupts). On Slurm,
            # Ctrl-C cancels the jobs (scancel), and SIGTERM now does the same
            # (RemoteTerm).
            if _recovery.executor(_args) in _recovery.LOCAL_EXECUTORS:
                _recovery.Interrupts(
                    os.getcwd(),
                    journal=_recovery.journal_path(_record),
                    log=logger.warning,
                    keep_incomplete=bool(getattr(_args, "keep_incomplete", False)),
                ).install(logger)
            else:
                _recovery.RemoteTerm().install()
    except OSError as e:  # e.g. a read-only .snakemake: Snakemake's own locking still applies
        logger.warning(f"Lock owner bookkeeping skipped: {e}")
