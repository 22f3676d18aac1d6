namespace OdaKvmBackup.Core.Run;

/// <summary>
/// The one way back: puts a run back and closes its set, for the run that fails (<see cref="BackupRun.FailAsync"/>)
/// and for Repair-KvmBackup (<see cref="RepairService"/>) alike. Each disk still on an overlay is committed back
/// onto its own file (blockcommit --active --pivot, with <see cref="CommitService"/>'s retries and bounds), the
/// snapshot metadata is deleted, the run's overlays are discarded once no disk uses them (never a file still in a
/// backing chain), the set is closed by the one rule for Complete (an Incomplete set loses the run's partial copies),
/// and the journal is removed, or kept as NeedsRepair while something is left.
/// </summary>
internal sealed class RunCloser
{
    private readonly HostTools _tools;
    private readonly CommitService _commit;
    private readonly RetentionService _retention;

    public RunCloser(HostTools tools, CommitService commit)
    {
        _tools = tools;
        _commit = commit;
        _retention = new RetentionService(tools.Virsh);
    }

    // ---------------------------------------------------------------- the one rule for Complete

    /// <summary>
    /// The one rule for the status a run closes its backup set with, used by the run that fails and by
    /// Repair-KvmBackup alike (nothing else decides it): Complete when every disk was copied and verified before the
    /// set was marked Incomplete (its data is whole: a failure after that, of a commit back, does not spoil it),
    /// Incomplete otherwise.
    /// </summary>
    public static BackupSetStatus ClosingStatus(RunRecord record) =>
        record.SetIncompleteReason is null && record.Disks.All(d => d.Verified) ? BackupSetStatus.Complete : BackupSetStatus.Incomplete;

    /// <summary>The set's status while its run may go on: InProgress until every disk is verified, unless the run
    /// failed or the set was marked Incomplete; then what it closes with.</summary>
    public static BackupSetStatus StatusWhileRunning(RunRecord record) =>
        record.FailureReason is null && record.SetIncompleteReason is null && !record.Disks.All(d => d.Verified)
            ? BackupSetStatus.InProgress
            : ClosingStatus(record);

    public static bool ClosesComplete(RunRecord record) => ClosingStatus(record) == BackupSetStatus.Complete;

    // ---------------------------------------------------------------- commit back

    /// <summary>The disks of the run that may still write to their overlays.</summary>
    public static IReadOnlyList<DiskRecord> StillOnOverlays(RunRecord record) =>
        record.Disks.Where(d => d.Overlay is not null && d.State < BackupStage.Committed).ToList();

    /// <summary>A disk of the run, as the commit back sees it: its own file below the overlay the journal recorded.</summary>
    public static CommitTarget CommitTargetOf(string domain, DiskRecord disk) => new(domain, disk.Target, disk.Source, disk.Format, disk.Overlay);

    /// <summary>Puts one disk back onto its own file: a leftover job is pivoted, a shut-off domain is committed offline.</summary>
    public Task<CommitOutcome> CommitBackAsync(CommitTarget disk, Action<int>? percent, CancellationToken ct) =>
        _commit.CommitAsync(disk, 0, percent, ct);

    /// <summary>Commits back every disk of the run still on an overlay, one after the other, with progress under
    /// <paramref name="activity"/>. A disk that went back is handed to <paramref name="wentBack"/> (the run records
    /// it); one that did not is added to <paramref name="problems"/> and to the list returned, and the others go on.</summary>
    public async Task<IReadOnlyList<string>> CommitBackAllAsync(RunRecord record, string activity, IOperationSink sink,
        Action<DiskRecord> wentBack, List<string> problems, CancellationToken ct)
    {
        var stillOnOverlays = new List<string>();
        var pending = StillOnOverlays(record);
        for (var i = 0; i < pending.Count; i++)
        {
            var disk = pending[i];
            var done = i * 100;
            sink.Progress(new ProgressUpdate(ProgressIds.Rollback, null, activity, $"{disk.Target}: committing {disk.Overlay} into {disk.Source}", done / pending.Count));
            try
            {
                await CommitBackAsync(CommitTargetOf(record.DomainName, disk),
                    p => sink.Progress(new ProgressUpdate(ProgressIds.Rollback, null, activity, $"{disk.Target}: {p} %", (done + p) / pending.Count)), ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is BackupException or OperationCanceledException)
            {
                stillOnOverlays.Add(disk.Target);
                problems.Add($"{disk.Target}: {ex.Message}");
                continue;
            }
            // Outside the catch: a journal that cannot say so does not make a disk that went back count as on its overlay.
            wentBack(disk);
        }
        sink.Progress(new ProgressUpdate(ProgressIds.Rollback, null, $"Putting {record.DomainName} back on its own disks", "Done", 100, Completed: true));
        return stillOnOverlays;
    }

    // ---------------------------------------------------------------- snapshot metadata

    /// <summary>Deletes the snapshot's metadata (snapshot-delete --metadata: no file is touched) if libvirt lists it:
    /// a snapshot-create-as cut short still completes in libvirtd.</summary>
    public async Task DeleteSnapshotMetadataAsync(string domain, string snapshotName, CancellationToken ct)
    {
        if ((await _tools.Virsh.ListSnapshotNamesAsync(domain, ct).ConfigureAwait(false)).Contains(snapshotName, StringComparer.Ordinal))
            await _tools.Virsh.DeleteSnapshotMetadataAsync(domain, snapshotName, ct).ConfigureAwait(false);
    }

    /// <summary>The run's way of it: a metadata that cannot be deleted is a problem left for Repair-KvmBackup.</summary>
    public async Task DeleteSnapshotMetadataAsync(RunRecord record, List<string> problems, CancellationToken ct)
    {
        try
        {
            await DeleteSnapshotMetadataAsync(record.DomainName, record.SnapshotName, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is BackupException or OperationCanceledException)
        {
            problems.Add($"the snapshot metadata '{record.SnapshotName}' could not be deleted ({ex.Message})");
        }
    }

    // ---------------------------------------------------------------- overlays

    /// <summary>The run's overlays that are still beside its disks (not retained).</summary>
    public static IEnumerable<DiskRecord> OverlaysLeft(RunRecord record) =>
        record.Disks.Where(d => d.Overlay is not null && d.State != BackupStage.Retained);

    /// <summary>Deletes an overlay of the run: its data is in the disk. Refused (OverlayInUse) while any backing chain holds it.</summary>
    public Task DiscardOverlayAsync(string overlay, CancellationToken ct) => _retention.DiscardAsync(overlay, ct);

    /// <summary>Moves an overlay to the retention folder instead (Repair-KvmBackup -RetentionPath), on the same condition.</summary>
    public Task<string> RetainOverlayAsync(string domain, string overlay, string retentionPath, string folder, string name, CancellationToken ct) =>
        _retention.MoveAsync(domain, overlay, retentionPath, folder, name, ct);

    /// <summary>The overlays of an abandoned run hold nothing the disks lack now, and would block the next snapshot.
    /// One that cannot be deleted is a problem left for Repair-KvmBackup; the others go.</summary>
    public async Task DiscardOverlaysAsync(RunRecord record, IOperationSink sink, List<string> problems, CancellationToken ct)
    {
        foreach (var disk in OverlaysLeft(record).Where(d => File.Exists(d.Overlay)))
        {
            try
            {
                await DiscardOverlayAsync(disk.Overlay!, ct).ConfigureAwait(false);
                sink.Verbose($"Deleted the overlay {disk.Overlay}: its data is in {disk.Source}.");
            }
            // A file the system will not let go of (EPERM: immutable, or its folder is) is a problem left for
            // Repair-KvmBackup, like any other: the rest of the way back (the set, the journal, the lock) goes on.
            catch (Exception ex) when (ex is BackupException or IOException or UnauthorizedAccessException or OperationCanceledException)
            {
                problems.Add($"{disk.Overlay} was left in place ({ex.Message})");
            }
        }
    }

    // ---------------------------------------------------------------- the set

    /// <summary>The names in the set of a disk's partial files: its copy and its digest list while they are written
    /// and not yet verified.</summary>
    public static IEnumerable<string> PartialNames(DiskRecord disk) =>
        [BackupNames.Partial(disk.SetFile), BackupNames.Partial(disk.SetFile + BackupNames.DigestListSuffix)];

    /// <summary>Deletes the run's own partial copies and digest lists from its set (a disk's file may itself be named
    /// *.partial, so only the names the run gave), except <paramref name="inUse"/>: those of copies still being
    /// written or read back, whose copy or check ends with its own files.</summary>
    public static async Task DeletePartialCopiesAsync(IBackupStore store, string set, RunRecord record, IReadOnlySet<string> inUse, CancellationToken ct)
    {
        var partials = record.Disks.SelectMany(PartialNames).ToHashSet(StringComparer.Ordinal);
        foreach (var entry in await store.ListAsync(set, ct).ConfigureAwait(false))
        {
            if (partials.Contains(entry.Name) && !inUse.Contains(entry.Name))
                await store.DeleteAsync(BackupNames.FileInSet(set, entry.Name), recursive: false, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Closes the set of a run that is over and whose process is gone (Repair-KvmBackup): the status by the
    /// one rule, the partial copies gone when it is Incomplete. Null when the set is not there any more (nothing is
    /// made again); otherwise the status written.</summary>
    public static async Task<BackupSetStatus?> CloseSetAsync(RunRecord record, IBackupStore store, string set, CancellationToken ct)
    {
        if (await store.GetEntryAsync(set, ct).ConfigureAwait(false) is null)
            return null;
        // Every disk copied and verified before the run stopped (a process killed before it wrote "Complete", or a
        // rollback whose commit failed after that): the set is whole. Otherwise it can never be trusted.
        var status = ClosingStatus(record);
        var why = record.SetIncompleteReason ?? record.FailureReason;
        var manifest = status == BackupSetStatus.Complete
            ? BackupManifest.FromRun(record, BackupSetStatus.Complete, null)
            : BackupManifest.FromRun(record, BackupSetStatus.Incomplete,
                $"run {record.RunId} was interrupted{(why is null ? "" : $" ({why})")}; closed by Repair-KvmBackup");
        // Partial copies first: never usable, and on a full destination their room is what the manifest needs.
        if (status != BackupSetStatus.Complete)
            await DeletePartialCopiesAsync(store, set, record, new HashSet<string>(), ct).ConfigureAwait(false);
        await BackupSet.SaveAsync(store, set, manifest, ct).ConfigureAwait(false);
        return status;
    }

    // ---------------------------------------------------------------- the journal

    /// <summary>Ends the journal: removed when nothing is left (the run is Finished), otherwise kept as NeedsRepair
    /// for Repair-KvmBackup. A journal that cannot be written or removed is <see cref="ErrorIds.JournalWriteFailed"/>.</summary>
    public static void CloseJournal(RunRecord record, bool somethingLeft)
    {
        record.Phase = somethingLeft ? RunPhase.NeedsRepair : RunPhase.Finished;
        if (somethingLeft)
            RunJournal.Save(record);
        else
            RunJournal.Delete(record.DomainName);
    }

    /// <summary>The run's way of it: kept when <paramref name="problems"/> are left. Only this last write counts:
    /// one that works sets the journal right whatever failed before it; one that fails is one more problem, and
    /// the run needs a repair after all.</summary>
    public static void CloseJournal(RunRecord record, List<string> problems)
    {
        try
        {
            CloseJournal(record, somethingLeft: problems.Count > 0);
        }
        catch (BackupException ex) when (ex.ErrorId == ErrorIds.JournalWriteFailed)
        {
            record.Phase = RunPhase.NeedsRepair;
            problems.Add($"its journal could not be updated ({ex.Message}); free space in the state folder '{StateDirectory.Root}' or fix it first");
        }
    }

    // ---------------------------------------------------------------- what the user is told

    /// <summary>What became of a run that was given up, as one sentence for the user.</summary>
    public static RollbackOutcome Outcome(RunRecord record, string reason, bool snapshotMayExist, IReadOnlyList<string> stillOnOverlays,
        IReadOnlyList<string> problems, string? setDescribed, bool setMarked)
    {
        var domain = record.DomainName;
        var set = setDescribed is null ? ""
            : ClosesComplete(record) ? $" The backup set '{setDescribed}' stays Complete: every disk had been copied and verified."
            : setMarked ? $" The backup set '{setDescribed}' is marked Incomplete."
            : ""; // the problems say why it is not marked yet
        var message = !snapshotMayExist
            ? problems.Count > 0
                ? $"Because {reason}, the backup of '{domain}' was stopped; its disks were never on overlays, but: {string.Join("; ", problems)}. Run Repair-KvmBackup -DomainName {domain} to clear what is left.{set}"
                : $"Because {reason}, the backup of '{domain}' was stopped; its disks were never on overlays.{set}"
            : stillOnOverlays.Count > 0
                ? $"Because {reason}, OdaKvmBackup tried to put '{domain}' back on its own disks but could not: {string.Join("; ", problems)}. {string.Join(", ", stillOnOverlays)} STILL write(s) to overlays. Run Repair-KvmBackup -DomainName {domain}.{set}"
                : problems.Count > 0
                    ? $"Because {reason}, '{domain}' was put back on its own disks, but: {string.Join("; ", problems)}. Run Repair-KvmBackup -DomainName {domain} to clear what is left.{set}"
                    : $"Because {reason}, '{domain}' was put back on its own disks ({string.Join(", ", record.Disks.Select(d => d.Target))}) and the run's overlays were removed.{set}";
        return new RollbackOutcome(domain, stillOnOverlays.Count == 0, problems.Count == 0, message);
    }
}
