namespace OdaKvmBackup.Commands;

/// <summary>
/// Base of the cmdlets that carry a run on (copy, commit, retention). Each takes a lease on the runs it touches
/// (<see cref="RunLease"/>): a run whose New-KvmDiskSnapshot is in the same pipeline is held by that command's lease;
/// a run picked up later (objects kept in a variable) by the first of these that touches it, whose lease puts the
/// domain back on its own disks if the pipeline stops before its end, and then lets go of the run's lock.
/// </summary>
public abstract class RunStepCmdlet : KvmCmdlet, IDisposable
{
    private readonly Dictionary<BackupRun, RunLease> _leases = new();

    private readonly List<VmDiskBackup> _held = new();

    /// <summary>Move-OverlayToRetention, the backup's last step, and whichever step ends the pipeline hold a disk
    /// back until its set's status is final and written (verification goes on in the background): what the user
    /// keeps shows the status the set keeps, never a passing InProgress.</summary>
    protected virtual bool HoldsUntilSetSettled => MyInvocation.PipelinePosition == MyInvocation.PipelineLength;

    /// <summary>Passes a disk on down the pipeline (held back first where <see cref="HoldsUntilSetSettled"/>).</summary>
    protected void PassOn(VmDiskBackup disk)
    {
        PassOnSettled();
        if (HoldsUntilSetSettled && !disk.Run.SetSettled)
            _held.Add(disk);
        else
            WriteObject(disk);
    }

    private void PassOnSettled()
    {
        foreach (var disk in _held.Where(d => d.Run.SetSettled).ToList())
        {
            _held.Remove(disk);
            WriteObject(disk);
        }
    }

    /// <summary>At the end of the command: every verification of this pipeline has ended by now (Copy-VmDisk waits for
    /// them in its own end), so whatever is still held goes.</summary>
    protected void PassOnHeld()
    {
        foreach (var disk in _held)
            WriteObject(disk);
        _held.Clear();
    }

    /// <summary>Holds a run for this command (see <see cref="RunLease"/>): a run picked up here, not held by an
    /// earlier command of the pipeline, is put back if the pipeline stops before this command's end.</summary>
    private protected void Lease(BackupRun run)
    {
        if (!_leases.ContainsKey(run))
            _leases[run] = run.Lease(HostReport);
    }

    /// <summary>At the end of EndProcessing: this command's part succeeded.</summary>
    protected void CompleteLeases()
    {
        foreach (var lease in _leases.Values)
            lease.Complete();
    }

    public void Dispose()
    {
        foreach (var lease in _leases.Values)
            lease.Dispose();
        // After the leases: a lease not completed puts its run back, and may need what the command holds.
        ReleaseResources();
        GC.SuppressFinalize(this);
    }

    /// <summary>Closes what the command opened (a store's SSH session), once the pipeline is done with it.</summary>
    private protected virtual void ReleaseResources()
    {
    }
}
