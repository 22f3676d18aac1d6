namespace OdaKvmBackup.Core.Run;

/// <summary>What a step will do for one disk: an act the user may be asked to confirm (<see cref="Target"/> and
/// <see cref="Action"/> are its ShouldProcess text), or nothing, with why (<see cref="Note"/>, a verbose line) and
/// whether the disk goes on down the pipeline.</summary>
internal sealed record StepPlan(bool Acts, bool PassOn, string? Note, string Target, string Action)
{
    public static StepPlan Act(string target, string action) => new(true, false, null, target, action);

    public static StepPlan Skip(bool passOn, string? note = null) => new(false, passOn, note, "", "");
}

// The steps of a run, as the cmdlets call them: each writes the journal before it acts (see the recording
// methods), decides what is given up when it fails, and returns what the user is told.
internal sealed partial class BackupRun
{
    private RunLease? _holder;
    private StopSignals? _signals;

    /// <summary>A command's hold on this run (see <see cref="RunLease"/>). The first lease taken while nobody
    /// holds the run answers for it, and from then until the run is over a signal puts it back as Ctrl+C does.</summary>
    public RunLease Lease(IStopReport report, StopSignals? signals = null)
    {
        signals ??= StopSignals.Process;
        RunLease lease;
        lock (_gate)
        {
            lease = new RunLease(this, _holder is null, report, signals);
            if (lease.Holds)
            {
                _holder = lease;
                _signals = signals;
            }
        }
        if (lease.Holds)
            signals.Add(this);
        return lease;
    }

    internal void EndLease(RunLease lease)
    {
        lock (_gate)
        {
            if (ReferenceEquals(_holder, lease))
                _holder = null;
        }
    }

    /// <summary>Gives the run up while its pipeline still runs (a step failed): put back through
    /// <see cref="FailAsync"/>, or, once a signal is stopping the process, by that stop.</summary>
    public async Task<RollbackOutcome> GiveUpAsync(string reason, IOperationSink sink)
    {
        // Not waited for here: this runs inside a step's work, and the signal's stop puts the runs back only once
        // that work has ended. It says itself how that went; the command's lease then waits for it.
        if (_signals is { Stopping: true })
            return new RollbackOutcome(DomainName, true, true, $"Because {reason}, '{DomainName}' is given up; the process is being stopped by a signal, which puts it back on its own disks and says how that went.");
        return await FailAsync(reason, sink).ConfigureAwait(false);
    }

    /// <summary>Said at the end of New-KvmDiskSnapshot for a run still on its overlays then: one the user chose to
    /// hold (a script), or one whose commit failed.</summary>
    public string? OnOverlaysNotice => OnOverlays && !Abandoned
        ? $"'{DomainName}' writes to overlays until its disks are committed back: pipe these objects to Invoke-BlockCommit, or run Repair-KvmBackup -DomainName {DomainName}."
        : null;

    // ---------------------------------------------------------------- snapshot

    /// <summary>Takes the snapshot the plan describes (the journal says Snapshotting first). One that fails gives
    /// the run up at once; a stop (Ctrl+C) is thrown, and the lease puts the run back.</summary>
    public async Task<StepFailure?> SnapshotAsync(SnapshotPlan plan, IOperationSink sink, CancellationToken ct)
    {
        try
        {
            await new SnapshotService(_tools).SnapshotAsync(this, plan, ct).ConfigureAwait(false);
            return null;
        }
        catch (BackupException ex)
        {
            return new StepFailure(ex, await GiveUpAsync("the snapshot step failed", sink).ConfigureAwait(false));
        }
    }

    // ---------------------------------------------------------------- commit

    /// <summary>What Invoke-BlockCommit does for a disk: nothing for a run given up (its overlays went with the
    /// rollback) or a cold backup; else commit and pivot.</summary>
    public StepPlan PlanCommit(string target)
    {
        var disk = Record.Disk(target);
        if (Abandoned)
            return StepPlan.Skip(passOn: false, $"{target} of {DomainName}: run {RunId} was given up; nothing to commit.");
        if (disk.Overlay is null)
            return StepPlan.Skip(passOn: true, $"{target} of {DomainName}: cold backup, nothing to commit.");
        return StepPlan.Act($"{target} of {DomainName}", $"Commit overlay '{disk.Overlay}' into '{disk.Source}' and pivot back to it (blockcommit --active --pivot)");
    }

    /// <summary>Commits a disk's overlay back into its own file and pivots (the journal says so first, then
    /// after). Returns the verbose line; a failure is thrown with the sentence that says where the disk writes.</summary>
    public async Task<string> CommitAsync(string target, int bandwidthMiBps, TimeSpan convergenceTimeout, IOperationSink sink, CancellationToken ct)
    {
        var disk = Record.Disk(target);
        var activity = $"Committing {target} of {DomainName}";
        var progressId = ProgressIds.Commit * 1000 + Math.Abs(target.GetHashCode(StringComparison.Ordinal) % 997);
        CommitOutcome outcome;
        try
        {
            BeginCommit(target);
            var commit = new CommitService(_tools.Virsh, _tools.QemuImg, sink) { ConvergenceTimeout = convergenceTimeout };
            outcome = await commit.CommitAsync(new CommitTarget(DomainName, target, disk.Source, disk.Format, disk.Overlay), bandwidthMiBps,
                percent => sink.Progress(new ProgressUpdate(progressId, null, activity, $"{percent} %", percent)), ct).ConfigureAwait(false);
        }
        catch (BackupException ex)
        {
            throw ex.WithSentence($"'{DomainName}' still writes to the overlay '{disk.Overlay}' for {target}.",
                ex.RecommendedAction ?? $"Run Repair-KvmBackup -DomainName {DomainName}.");
        }
        finally
        {
            sink.Progress(new ProgressUpdate(progressId, null, activity, "Done", 100, Completed: true));
        }
        try
        {
            RecordCommitted(target);
        }
        catch (BackupException ex)
        {
            // The commit worked; only the journal could not record it (JournalWriteFailed).
            throw ex.WithSentence($"The commit itself worked: {target} of '{DomainName}' writes to '{disk.Source}' again.");
        }
        return $"{target} of {DomainName} writes to {disk.Source} again ({outcome}, {Disks.First(d => d.Target == target).TimeOnOverlay?.TotalSeconds:0.0} s on its overlay).";
    }

    // ---------------------------------------------------------------- retention

    /// <summary>What Move-OverlayToRetention does for a disk: nothing for a run given up (its overlays went with
    /// the rollback) or a disk without an overlay to keep; else move it into the batch's retention folder.</summary>
    public StepPlan PlanRetention(string target, RetentionBatch batch)
    {
        var disk = Record.Disk(target);
        if (Abandoned)
            return StepPlan.Skip(passOn: false);
        if (disk.Overlay is null || disk.RetainedName is null)
            return StepPlan.Skip(passOn: true);
        return StepPlan.Act(disk.Overlay, $"Move to '{batch.RetainedPath(Record, disk)}'");
    }

    /// <summary>Moves a disk's overlay into the retention folder (never one still in a backing chain), then records
    /// it; once every overlay is retained the run is over.</summary>
    public async Task RetainAsync(string target, RetentionBatch batch, CancellationToken ct)
    {
        var disk = Record.Disk(target);
        var moved = await batch.MoveAsync(Record, disk, ct).ConfigureAwait(false);
        try
        {
            RecordRetained(target, moved);
        }
        catch (BackupException ex)
        {
            // The overlay was moved; only the journal could not record it (JournalWriteFailed).
            throw ex.WithSentence($"The overlay of {target} was moved to '{moved}'.");
        }
    }
}
