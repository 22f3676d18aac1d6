namespace OdaKvmBackup.Core.Run;

/// <summary>
/// A command's hold on a run, in the shape of a TransactionScope: <c>using var lease = run.Lease(report)</c>, the
/// run's steps, then <see cref="Complete"/> once the command's part succeeded. Disposing a lease that was not
/// completed (the pipeline was stopped, a later command failed, Ctrl+C) puts the run back through its one way back
/// (<see cref="BackupRun.FailAsync"/>) and says what became of the VM on <c>report</c>; a signal's stop
/// (<see cref="StopSignals"/>) goes the same way. Either way the run then lets go of its lock.
/// The first lease of a run holds it; a lease taken while another holds the run (a later command of the same
/// pipeline) does nothing when it ends: the holder answers for the run.
/// </summary>
internal sealed class RunLease : IDisposable
{
    /// <summary>Why a run whose lease ended without being completed is put back.</summary>
    public const string StoppedReason = "the pipeline stopped before the backup finished";

    private readonly IStopReport _report;
    private readonly StopSignals _signals;
    private bool _completed;
    private bool _disposed;

    internal RunLease(BackupRun run, bool holds, IStopReport report, StopSignals signals)
    {
        Run = run;
        Holds = holds;
        _report = report;
        _signals = signals;
    }

    public BackupRun Run { get; }

    /// <summary>True for the lease that answers for the run (the first one taken while nobody held it).</summary>
    public bool Holds { get; }

    /// <summary>The command's part succeeded: ending the lease lets go of the run without putting it back.</summary>
    public void Complete() => _completed = true;

    public void Dispose()
    {
        if (_disposed || !Holds)
            return;
        _disposed = true;
        try
        {
            if (!_completed && !Run.Abandoned && Run.Phase is not (RunPhase.Finished or RunPhase.Committed))
                PutBack();
        }
        finally
        {
            Run.EndLease(this);
            Release();
        }
    }

    /// <summary>The pipeline is gone: what became of the VM goes straight to the host, as an error line even when
    /// all went well (the user stopped a backup and must see it).</summary>
    private void PutBack()
    {
        if (_signals.Stopping)
        {
            _signals.WaitForStop(Run); // a signal's stop puts the run back and tells the user
            return;
        }
        var outcome = Task.Run(() => Run.FailAsync(StoppedReason, _report)).GetAwaiter().GetResult();
        _report.Line(outcome.Message);
    }

    /// <summary>Lets go of the run. A journal that cannot be removed then is said on the host.</summary>
    private void Release()
    {
        if (_signals.Stopping)
            _signals.WaitForStop(Run); // the process ends there: no later statement runs meanwhile
        try
        {
            Run.Release();
        }
        catch (BackupException ex)
        {
            _report.Line(ex.FullMessage);
        }
        _signals.Forget(Run);
    }
}
