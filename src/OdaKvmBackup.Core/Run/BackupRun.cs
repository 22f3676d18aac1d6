namespace OdaKvmBackup.Core.Run;

/// <summary>
/// Owns one domain's run: its lock, its journal (the <see cref="RunRecord"/>, saved before each step that changes
/// the host), the state of each disk, the backup set's status, and the way back. Every step goes through here:
/// a step that does not fit the disk's state is refused with an error that says why, so a disk is never copied
/// after it went back to writing its own file, and a set is Complete only when every disk was copied while frozen
/// and verified. The pipeline objects (<see cref="VmDiskBackup"/>) only point at it.
/// </summary>
internal sealed partial class BackupRun
{
    /// <summary>How long putting a domain back may take; Ctrl+C does not cut it short.</summary>
    public static readonly TimeSpan RollbackBound = TimeSpan.FromMinutes(30);

    private readonly object _gate = new();
    private readonly HostTools _tools;
    private readonly HashSet<string> _copying = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _manifestGate = new(1, 1);
    private readonly SemaphoreSlim _setGate = new(1, 1);
    private DomainLock? _lock;
    private IBackupStore? _store;

    private BackupRun(RunRecord record, DomainLock domainLock, HostTools tools)
    {
        Record = record;
        _lock = domainLock;
        _tools = tools;
        Disks = record.Disks.Select(d => new VmDiskBackup(this, d.Target)).ToList();
    }

    /// <summary>The journal's content. Read it; change it only through this class.</summary>
    public RunRecord Record { get; }
    public string DomainName => Record.DomainName;
    public string RunId => Record.RunId;
    public BackupConsistency Consistency => Record.Consistency;
    /// <summary>The pipeline objects, one per disk, in the order of the domain's XML.</summary>
    public IReadOnlyList<VmDiskBackup> Disks { get; }
    public IBackupStore? Store => _store;

    /// <summary>True while some disk may write to an overlay of this run.</summary>
    public bool OnOverlays
    {
        get { lock (_gate) return Record.Phase is RunPhase.Snapshotting or RunPhase.OnOverlays or RunPhase.RollingBack or RunPhase.NeedsRepair; }
    }

    /// <summary>The run was given up (failed or stopped): its remaining steps do nothing.</summary>
    public bool Abandoned
    {
        get { lock (_gate) return Record.FailureReason is not null; }
    }

    /// <summary>The backup set's status: InProgress while the run goes on and some disk is not verified yet;
    /// otherwise what <see cref="RunCloser.ClosingStatus"/>, the one rule Repair-KvmBackup applies too, says.</summary>
    public BackupSetStatus SetStatus
    {
        get { lock (_gate) return SetStatusLocked(); }
    }

    private BackupSetStatus SetStatusLocked() => RunCloser.StatusWhileRunning(Record);

    /// <summary>True once the set's final status is known and written to its manifest (or there is no set): what
    /// a pipeline hands its user then shows the status the set keeps.</summary>
    public bool SetSettled
    {
        get
        {
            lock (_gate)
                return Record.SetFolder is null || Record.FailureReason is not null
                    || (_writtenStatus is { } written && written != BackupSetStatus.InProgress);
        }
    }

    private BackupSetStatus? _writtenStatus;

    private bool CopiesRunning
    {
        get { lock (_gate) return _copying.Count > 0; }
    }

    public RunPhase Phase
    {
        get { lock (_gate) return Record.Phase; }
    }

    /// <summary>Starts a run: takes the domain's lock and writes the journal before anything changes.</summary>
    public static BackupRun Begin(RunRecord record, HostTools tools)
    {
        var domainLock = DomainLock.TryAcquire(record.DomainName) ?? throw RunErrors.BackupInProgress(record.DomainName);
        try
        {
            RunJournal.Save(record);
        }
        catch
        {
            domainLock.Dispose();
            throw;
        }
        return new BackupRun(record, domainLock, tools);
    }

    // ---------------------------------------------------------------- snapshot

    /// <summary>Written before snapshot-create-as runs: from here on, overlays may exist whatever the call says.
    /// A journal that cannot say so stops the snapshot, and the run stays Planned: no overlay was made.</summary>
    public void RecordSnapshotStarting()
    {
        lock (_gate)
        {
            var before = Record.Phase;
            Record.Phase = RunPhase.Snapshotting;
            try
            {
                RunJournal.Save(Record);
            }
            catch (BackupException)
            {
                Record.Phase = before;
                throw;
            }
        }
    }

    /// <summary>snapshot-create-as did not answer in time: whatever is undone now, libvirtd may still finish it.</summary>
    public void RecordSnapshotOutcomeUnknown() => Change(() => Record.SnapshotOutcomeUnknown = true);

    public void RecordSnapshotTaken(DateTime utc) => Change(() =>
    {
        Record.Phase = RunPhase.OnOverlays;
        Record.SnapshotUtc = utc;
        foreach (var disk in Record.Disks)
            disk.State = BackupStage.Snapshotted;
    });

    // ---------------------------------------------------------------- copy

    /// <summary>Checks that a disk can be copied now and marks it as being copied.</summary>
    public void BeginCopy(string target, IBackupStore store)
    {
        lock (_gate)
        {
            EnsureAttached();
            var disk = Record.Disk(target);
            if (Record.FailureReason is { } why)
                throw RunErrors.RunAbandoned(Record, why);
            if (Record.Destination is { } destination && destination != store.Location)
                throw RunErrors.RunHasAnotherDestination(Record, destination, store.Location);
            var frozen = Consistency == BackupConsistency.Cold ? BackupStage.Planned : BackupStage.Snapshotted;
            if (_copying.Contains(target) || disk.State == BackupStage.Copied)
                throw RunErrors.AlreadyCopied(Record, disk);
            if (disk.State != frozen)
                throw RunErrors.DiskNoLongerFrozen(Record, disk);
            _copying.Add(target);
            var before = disk.CopyStartedUtc;
            disk.CopyStartedUtc = DateTime.UtcNow;
            // Written before any byte is: a copy the journal does not know of is one nobody would clean up.
            SaveAhead(() =>
            {
                _copying.Remove(target);
                disk.CopyStartedUtc = before;
            });
        }
    }

    /// <summary>Creates the run's backup set on first use: its folder, domain.xml and a manifest that says InProgress.</summary>
    public async Task<string> EnsureSetAsync(IBackupStore store, bool force, CancellationToken ct)
    {
        // The copies of a run start together: the first makes the set, the others wait for it and use it. Looking
        // meanwhile, they would take the new set for an older one: BackupSetExists, or with -Force, deleted.
        await _setGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            return await EnsureSetOnceAsync(store, force, ct).ConfigureAwait(false);
        }
        finally
        {
            _setGate.Release();
        }
    }

    private async Task<string> EnsureSetOnceAsync(IBackupStore store, bool force, CancellationToken ct)
    {
        lock (_gate)
        {
            if (Record.SetFolder is { } existing && _store is not null)
                return existing;
        }
        var set = BackupNames.SetFolder(DomainName, RunId);
        if (await store.GetEntryAsync(set, ct).ConfigureAwait(false) is not null)
        {
            if (!force)
                throw RunErrors.BackupSetExists(DomainName, store.Describe(set));
            // Even with -Force nothing is deleted: the older set is kept aside, for its owner to remove.
            await store.RenameAsync(set, BackupNames.ReplacedSetFolder(set, DateTime.UtcNow), ct).ConfigureAwait(false);
        }
        // The journal names the set before it exists (an older set of that name was kept aside above, so the journal
        // never names a set this run did not make): whatever stops the run from here on, Repair-KvmBackup finds it.
        lock (_gate)
        {
            var (destinationBefore, setBefore) = (Record.Destination, Record.SetFolder);
            Record.Destination = store.Location;
            Record.SetFolder = set;
            SaveAhead(() => (Record.Destination, Record.SetFolder) = (destinationBefore, setBefore));
        }
        await store.CreateFolderAsync(set, ct).ConfigureAwait(false);
        await store.WriteSmallFileAsync(BackupNames.DomainXmlPath(set), System.Text.Encoding.UTF8.GetBytes(Record.DomainXml), ct).ConfigureAwait(false);
        lock (_gate)
            _store = store;
        await WriteManifestAsync(ct).ConfigureAwait(false);
        return set;
    }

    /// <summary>Written before the copy's file is made (a clone of the base, or an empty file): on which set it is
    /// based, or why it is full. The file's name says it is the run's (<see cref="RunCloser.PartialNames"/>), whichever.</summary>
    public void RecordCopyStart(string target, string? basedOn, string? fullBecause)
    {
        lock (_gate)
        {
            var disk = Record.Disk(target);
            var before = (disk.BasedOn, disk.FullBecause);
            (disk.BasedOn, disk.FullBecause) = (basedOn, fullBecause);
            SaveAhead(() => (disk.BasedOn, disk.FullBecause) = before);
        }
    }

    /// <summary>The copy of a disk was written (as .partial) from its frozen file, with its digest list beside it.</summary>
    public void RecordCopied(string target, CopyResult copy, string storedAs, long bytesCloned)
    {
        Change(() =>
        {
            var disk = Record.Disk(target);
            _copying.Remove(target);
            disk.State = BackupStage.Copied;
            disk.SizeBytes = copy.SizeBytes;
            disk.DataBytes = copy.DataBytes;
            // Format OdaKvmBackup/3: the digest list replaces the content digest and the segment digests.
            disk.ContentDigest = null;
            disk.SegmentDigests = null;
            disk.Digests = copy.Digests.Sha256;
            disk.StoredAs = storedAs;
            disk.BytesRead = copy.BytesRead;
            disk.BytesSent = copy.BytesSent;
            disk.BytesCloned = bytesCloned;
            disk.BytesResent = copy.BytesResent;
            disk.CopiedUtc = DateTime.UtcNow;
        });
    }

    /// <summary>The copy did not happen: the disk is frozen still, as before.</summary>
    public void CopyAbandoned(string target)
    {
        lock (_gate)
            _copying.Remove(target);
    }

    /// <summary>The copy was read back from storage and matched: once every disk is, the set is Complete.</summary>
    public async Task RecordVerifiedAsync(string target, string verifiedBy, CancellationToken ct)
    {
        Change(() =>
        {
            var disk = Record.Disk(target);
            disk.Verified = true;
            disk.VerifiedBy = verifiedBy;
        });
        await WriteManifestAsync(ct).ConfigureAwait(false);
    }

    /// <summary>The set cannot become Complete (a copy failed its check, or the run failed): it says so, and why.</summary>
    public async Task MarkSetIncompleteAsync(string reason, CancellationToken ct)
    {
        if (_store is null || Record.SetFolder is null)
            return;
        string setFolder;
        HashSet<string> inUseByACopy;
        lock (_gate)
        {
            if (RunCloser.ClosesComplete(Record))
                return; // every disk was copied and verified: what fails later (a commit) does not spoil the set
            setFolder = Record.SetFolder;
            // For good: a check that passes later does not make the set whole again. The journal keeps it with that
            // check's own write (the only one after which it changes what Repair-KvmBackup would decide).
            Record.SetIncompleteReason ??= reason;
            // Copies still being written, or written and being read back: their copy or check ends with its own file
            // (renamed, or left for the rollback's marking once the copy is given up).
            inUseByACopy = Record.Disks.Where(d => _copying.Contains(d.Target) || (d.State == BackupStage.Copied && !d.Verified))
                .SelectMany(RunCloser.PartialNames).ToHashSet(StringComparer.Ordinal);
        }
        // Partial copies first: never usable, and on a full destination their room is what the manifest needs.
        await RunCloser.DeletePartialCopiesAsync(_store, setFolder, Record, inUseByACopy, ct).ConfigureAwait(false);
        await WriteManifestAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Writes the set's state as it is now. One write at a time, each computed once the previous one is
    /// written: a manifest computed earlier (InProgress) never lands on top of a later one (Complete, Incomplete).</summary>
    private async Task WriteManifestAsync(CancellationToken ct)
    {
        await _manifestGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            BackupManifest manifest;
            string set;
            lock (_gate)
            {
                if (_store is null || Record.SetFolder is null)
                    return;
                var status = SetStatusLocked();
                manifest = BackupManifest.FromRun(Record, status, status == BackupSetStatus.Incomplete ? Record.SetIncompleteReason ?? Record.FailureReason : null);
                set = Record.SetFolder;
            }
            await BackupSet.SaveAsync(_store, set, manifest, ct).ConfigureAwait(false);
            lock (_gate)
                _writtenStatus = manifest.Status;
        }
        finally
        {
            _manifestGate.Release();
        }
    }

    // ---------------------------------------------------------------- commit and retention

    /// <summary>Checks that a disk may be committed now: not while its copy runs, and not twice.</summary>
    public void BeginCommit(string target)
    {
        lock (_gate)
        {
            EnsureAttached();
            var disk = Record.Disk(target);
            if (Record.FailureReason is { } why)
                throw RunErrors.RunAbandoned(Record, why);
            if (_copying.Contains(target))
                throw RunErrors.DiskBeingCopied(Record, disk);
            if (disk.CommitStartedUtc is null)
            {
                disk.CommitStartedUtc = DateTime.UtcNow;
                // Written before blockcommit runs: the journal says a commit may be under way.
                SaveAhead(() => disk.CommitStartedUtc = null);
            }
        }
    }

    public void RecordCommitted(string target) => Change(() =>
    {
        var disk = Record.Disk(target);
        if (disk.State < BackupStage.Committed)
        {
            disk.State = BackupStage.Committed;
            disk.CommittedUtc = DateTime.UtcNow;
        }
        if (Record.Phase == RunPhase.OnOverlays && Record.Disks.All(d => d.State >= BackupStage.Committed))
            Record.Phase = RunPhase.Committed;
    });

    /// <summary>The overlay now lies in the retention folder; once every overlay does, the run is over.</summary>
    public void RecordRetained(string target, string retainedPath)
    {
        Change(() =>
        {
            var disk = Record.Disk(target);
            disk.State = BackupStage.Retained;
            disk.RetainedOverlay = retainedPath;
        });
        lock (_gate)
        {
            if (Record.Disks.All(d => d.State == BackupStage.Retained))
                Release();
        }
    }

    /// <summary>Ends a run whose pipeline has finished with it: a cold run, or one whose overlays are all retained,
    /// is over (journal removed); one still on overlays or with overlays beside its disks keeps its journal, and
    /// lets go of the lock so that Repair-KvmBackup (or a later pipeline with these objects) can take it.</summary>
    public void Release()
    {
        lock (_gate)
        {
            var over = Record.Phase == RunPhase.Finished
                || Record.FailureReason is null && (Consistency == BackupConsistency.Cold
                    || Record.Disks.All(d => d.State == BackupStage.Retained || d.State == BackupStage.Committed && (d.Overlay is null || !File.Exists(d.Overlay))));
            try
            {
                if (over && Record.Phase != RunPhase.Finished)
                {
                    Record.Phase = RunPhase.Finished;
                    RunJournal.Delete(DomainName);
                }
            }
            finally
            {
                // A journal that cannot be removed stays for Repair-KvmBackup, which needs the lock free.
                _lock?.Dispose();
                _lock = null;
            }
        }
    }

    // ---------------------------------------------------------------- the way back

    /// <summary>
    /// Gives the run up, the way Repair-KvmBackup closes a run (<see cref="RunCloser"/>, the one way back): every
    /// disk still on an overlay is committed back to its own file, leftover snapshot metadata is deleted, the run's
    /// overlays are removed once no disk uses them, and the set is marked Incomplete (unless it already was
    /// Complete, by the rule of <see cref="RunCloser.ClosingStatus"/>). What it does is reported to
    /// <paramref name="sink"/> as it goes (progress, then the outcome); it runs to its end within
    /// <see cref="RollbackBound"/>, whatever happens to the caller. It runs once: a second caller (a pipeline's
    /// guard and a signal's stop at the same time) gets the same rollback and its outcome.
    /// </summary>
    public Task<RollbackOutcome> FailAsync(string reason, IOperationSink sink)
    {
        lock (_gate)
            return _rollback ??= Task.Run(() => FailOnceAsync(reason, sink));
    }

    private Task<RollbackOutcome>? _rollback;

    /// <summary>Cancelled when the run is given up: the copies of the run stop then, whoever gives it up.</summary>
    private readonly CancellationTokenSource _givenUp = new();

    /// <summary>Cancelled once the run is given up (<see cref="FailAsync"/>): what its copies also stop on. Ctrl+C
    /// alone cannot be counted on to stop them: PowerShell calls no StopProcessing of a pipeline that has begun to
    /// end (the stop came while a later command was already unwinding), and that pipeline's lease then puts the run back.</summary>
    public CancellationToken GivenUp => _givenUp.Token;

    private async Task<RollbackOutcome> FailOnceAsync(string reason, IOperationSink sink)
    {
        using var bound = new CancellationTokenSource(RollbackBound);
        var ct = bound.Token;
        bool snapshotMayExist;
        lock (_gate)
        {
            try
            {
                _lock ??= DomainLock.TryAcquire(DomainName); // best effort: the journal stays the record if another holds it
            }
            catch (BackupException)
            {
                // a state folder that cannot be written: the VM goes back all the same
            }
            Record.FailureReason ??= reason;
            snapshotMayExist = Record.Phase is RunPhase.Snapshotting or RunPhase.OnOverlays or RunPhase.Committed or RunPhase.RollingBack or RunPhase.NeedsRepair;
            if (snapshotMayExist)
                Record.Phase = RunPhase.RollingBack;
            SaveDuringRollback(sink);
        }
        // A copy still reading the frozen file must stop before the commit writes into that file: stopped here, then
        // waited for.
        await _givenUp.CancelAsync().ConfigureAwait(false);
        for (var waited = 0; waited < 600 && CopiesRunning; waited++)
            await Task.Delay(100, CancellationToken.None).ConfigureAwait(false);
        var problems = new List<string>();
        var closer = new RunCloser(_tools, new CommitService(_tools.Virsh, _tools.QemuImg, sink));

        IReadOnlyList<string> stillOnOverlays = [];
        if (snapshotMayExist)
        {
            stillOnOverlays = await closer.CommitBackAllAsync(Record, $"Putting {DomainName} back on its own disks ({reason})", sink, disk =>
            {
                lock (_gate)
                {
                    disk.State = BackupStage.RolledBack;
                    SaveDuringRollback(sink);
                }
            }, problems, ct).ConfigureAwait(false);
            await closer.DeleteSnapshotMetadataAsync(Record, problems, ct).ConfigureAwait(false);
            if (stillOnOverlays.Count == 0)
                await closer.DiscardOverlaysAsync(Record, sink, problems, ct).ConfigureAwait(false);
        }

        // The VM first, the set then: a destination that does not answer (an SSH server that is down) must not
        // keep the VM on its overlays while its store retries.
        var setMarked = false;
        try
        {
            await MarkSetIncompleteAsync(reason, ct).ConfigureAwait(false);
            setMarked = true;
        }
        catch (Exception ex) when (ex is BackupException or IOException or OperationCanceledException)
        {
            problems.Add($"the backup set could not be marked Incomplete ({ex.Message}); Repair-KvmBackup -DomainName {DomainName} marks it once the destination answers");
        }
        if (Record.SnapshotOutcomeUnknown)
            problems.Add($"snapshot-create-as did not answer in time, so libvirtd may still finish that snapshot later (run Repair-KvmBackup -DomainName {DomainName} once 'virsh list' answers again, to be sure)");
        lock (_gate)
        {
            try
            {
                RunCloser.CloseJournal(Record, problems);
            }
            finally
            {
                _lock?.Dispose();
                _lock = null;
            }
        }
        return RunCloser.Outcome(Record, reason, snapshotMayExist, stillOnOverlays, problems,
            Record.SetFolder is null || _store is null ? null : _store.Describe(Record.SetFolder), setMarked);
    }

    // ---------------------------------------------------------------- journal and lock

    /// <summary>During the way back a journal that cannot be written does not stop it: the VM on its own disks
    /// matters more than the record of it, and the journal left says no less than the truth (a disk may be on an
    /// overlay), which Repair-KvmBackup checks against the domain. The last write of the rollback reports.</summary>
    private void SaveDuringRollback(IOperationSink sink)
    {
        try
        {
            RunJournal.Save(Record);
        }
        catch (BackupException ex) when (ex.ErrorId == ErrorIds.JournalWriteFailed)
        {
            sink.Verbose($"{ex.Message} Putting '{DomainName}' back on its own disks all the same.");
        }
    }

    /// <summary>Makes a change and writes it to the journal. A journal that cannot be written throws
    /// <see cref="ErrorIds.JournalWriteFailed"/> with the change kept here: the run goes on saying what happened
    /// on the host (its way back needs that); only the record on disk is behind.</summary>
    private void Change(Action change)
    {
        lock (_gate)
        {
            change();
            if (Record.Phase != RunPhase.Finished)
                RunJournal.Save(Record);
        }
    }

    /// <summary>Writes the journal before an act (under the gate): one that cannot be written stops the act, and
    /// <paramref name="undo"/> puts the record back as it was, so the run says only what happened.</summary>
    private void SaveAhead(Action undo)
    {
        try
        {
            RunJournal.Save(Record);
        }
        catch (BackupException)
        {
            undo();
            throw;
        }
    }

    /// <summary>A run whose pipeline ended lets go of its lock; a later step takes it again, after checking that
    /// nobody (Repair-KvmBackup) closed the run meanwhile.</summary>
    private void EnsureAttached()
    {
        if (_lock is not null)
            return;
        if (Record.Phase == RunPhase.Finished)
            throw RunErrors.RunClosed(Record);
        _lock = DomainLock.TryAcquire(DomainName) ?? throw RunErrors.BackupInProgress(DomainName);
        if (RunJournal.TryLoad(DomainName) is not { } journal || journal.RunId != RunId)
        {
            _lock.Dispose();
            _lock = null;
            Record.Phase = RunPhase.Finished;
            throw RunErrors.RunClosed(Record);
        }
    }
}
