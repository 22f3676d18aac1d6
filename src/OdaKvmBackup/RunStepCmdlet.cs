using OdaKvmBackup.Core.Safety;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Base of the cmdlets that carry a run on (copy, commit, retention). A run whose New-KvmDiskSnapshot is in the
/// same pipeline is guarded by that command; a run picked up later (objects kept in a variable) is guarded by the
/// first of these that touches it: if its pipeline is stopped, the domain goes back on its own disks, and at the
/// end the run lets go of its lock.
/// </summary>
public abstract class RunStepCmdlet : KvmCmdlet, IDisposable
{
    private readonly HashSet<BackupRun> _adopted = new();

    /// <summary>Set at the end of EndProcessing: a pipeline that got there was not stopped.</summary>
    protected bool Completed { get; set; }

    protected void Adopt(BackupRun run)
    {
        if (run.Guardian is null)
        {
            run.Guardian = this;
            _adopted.Add(run);
        }
    }

    public void Dispose()
    {
        foreach (var run in _adopted)
        {
            if (!Completed && !run.Abandoned && run.Phase is not (RunPhase.Finished or RunPhase.Committed))
                GiveUp(run, "the pipeline stopped before the backup finished", pipelineAlive: false);
            run.Guardian = null;
            run.Release();
        }
        GC.SuppressFinalize(this);
    }
}
