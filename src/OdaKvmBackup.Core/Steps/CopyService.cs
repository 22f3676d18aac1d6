namespace OdaKvmBackup.Core.Steps;

/// <summary>What Copy-VmDisk reports of one disk.</summary>
internal sealed record CopyOutcome(VmDiskBackup Disk, TimeSpan Duration)
{
    /// <summary>The verbose line for it: what was read and sent, how the copy is stored, and on which set it is based.</summary>
    public string Sentence => $"Copied {Disk.Target} of {Disk.DomainName} in {Duration.TotalSeconds:0.0} s: read {FileSystemPaths.FormatBytes(Disk.BytesRead ?? 0)}, " +
        $"sent {FileSystemPaths.FormatBytes(Disk.BytesSent ?? 0)}{(Disk.BytesResent is > 0 ? $" ({FileSystemPaths.FormatBytes(Disk.BytesResent.Value)} of it again, because the base had rotted there)" : "")}; " +
        (Disk.BasedOn is { } basedOn
            ? $"stored as {Disk.StoredAs} of set {basedOn} ({FileSystemPaths.FormatBytes(Disk.BytesCloned ?? 0)} of data taken from it)"
            : $"stored in full ({Disk.FullBecause})") +
        $"; digest list {Disk.Digests}. It is read back from storage in the background.";
}

/// <summary>The next disk of a run handed on by the copy step: one copied, or the run given up (its copies failed),
/// or neither once every copy of the run was handed on.</summary>
internal sealed record CopyStep(CopyOutcome? Copied, StepFailure? Failure);

/// <summary>
/// Step 3: copies the frozen disk files of runs into a store. All the disks of a run (they were frozen together)
/// are copied together, up to <c>throttleLimit</c> at a time, and each is handed on as soon as its copy is written,
/// so that it can be committed while the others are still copied. The read-back check of each copy follows in
/// the background: the VM need not stay on its overlays for it, and the set becomes Complete only once every copy
/// passed it.
/// </summary>
internal sealed class CopyService
{
    private readonly HostTools _tools;
    private readonly IBackupStore _store;
    private readonly bool _force;
    private readonly long _bandwidth;
    private readonly SemaphoreSlim _slots;
    private readonly IOperationSink _sink;
    private readonly Dictionary<BackupRun, RunCopies> _runs = new();
    private readonly List<Task> _verifications = new();
    private readonly HashSet<BackupRun> _failed = new();
    private int _progressIds;

    /// <summary>With <paramref name="full"/> (-Full) every disk is copied in full, none based on an earlier set.</summary>
    public CopyService(HostTools tools, IBackupStore store, bool force, int bandwidthMiBps, int throttleLimit, IOperationSink sink, bool full = false)
    {
        _tools = tools;
        _store = store;
        _force = force;
        _bandwidth = bandwidthMiBps * (1L << 20);
        _slots = new SemaphoreSlim(Math.Max(1, throttleLimit));
        _sink = sink;
        Bases = new CopyBases(store, full, sink);
    }

    public IBackupStore Store => _store;

    /// <summary>The base of each disk's copy, chosen before the snapshot by the preflight (<see cref="CopyDestinationCheck"/>).</summary>
    public CopyBases Bases { get; }

    /// <summary>Copy-VmDisk's ShouldProcess text for a run.</summary>
    public (string Target, string Action) Describe(BackupRun run)
    {
        var set = _store.Describe(BackupNames.SetFolder(run.DomainName, run.RunId));
        var replaces = _force ? $" (an existing set of that name is kept aside as {set}.replaced-<time>)" : "";
        return ($"{run.DomainName} ({string.Join(", ", run.Disks.Select(d => d.Target))})", $"Copy the frozen disk files into {set}, sending only the blocks that differ from the last Complete set there (unless -Full), and verify them{replaces}");
    }

    /// <summary>True once the run's copies failed and the run was given up (reported once, by <see cref="TakeAsync"/>).</summary>
    public bool Failed(BackupRun run) => _failed.Contains(run);

    /// <summary>Runs whose copies started here and were not all handed on (some disks never reached the command).</summary>
    public IReadOnlyList<BackupRun> Unfinished() => _runs.Keys.Where(r => !_failed.Contains(r) && !AllHandedOn(r)).ToList();

    /// <summary>The next copy of the run to finish. A copy that fails stops the run's other copies and gives the run
    /// up (its VM goes back on its own disks); that failure is returned as a value, with the rollback's outcome,
    /// because the command goes on with the other VMs. A stop (Ctrl+C) is thrown.</summary>
    public async Task<CopyStep> TakeAsync(BackupRun run)
    {
        try
        {
            return new CopyStep(await NextAsync(run).ConfigureAwait(false), null);
        }
        catch (BackupException ex)
        {
            _failed.Add(run);
            await AbandonAsync(run).ConfigureAwait(false);
            var error = ex.WithSentence($"The backup of '{run.DomainName}' is given up; other VMs go on.", target: run.DomainName);
            return new CopyStep(null, new StepFailure(error, await run.GiveUpAsync($"copying a disk of '{run.DomainName}' failed", _sink).ConfigureAwait(false)));
        }
    }

    /// <summary>Starts the copies of every disk of the run (once per run); a step that does not fit a disk's state
    /// throws at once (a disk already committed is never copied).</summary>
    public void Start(BackupRun run, CancellationToken ct)
    {
        if (_runs.ContainsKey(run))
            return;
        // Stopped by the command's stop (Ctrl+C) and by the run's rollback, whichever comes: PowerShell may skip the first.
        var copies = new RunCopies(run, CancellationTokenSource.CreateLinkedTokenSource(ct, run.GivenUp));
        var pending = new List<VmDiskBackup>();
        foreach (var disk in run.Disks)
        {
            try
            {
                run.BeginCopy(disk.Target, _store);
                pending.Add(disk);
            }
            catch (BackupException ex) when (ex.ErrorId == ErrorIds.AlreadyCopied)
            {
                // an earlier Copy-VmDisk of this pipeline copied it into this very store
            }
            catch
            {
                foreach (var started in pending)
                    run.CopyAbandoned(started.Target);
                throw;
            }
        }
        copies.ProgressId = ProgressIds.Copy * 1000 + Interlocked.Increment(ref _progressIds);
        SmallDisksFirst.Start(pending, d => SizeToRead(run.Record.Disk(d.Target)),
            (disk, before) => copies.Tasks[disk.Target] = CopyOneAsync(run, disk, copies, before, copies.Stop.Token));
        _runs[run] = copies;
    }

    /// <summary>The copies of a run not handed on yet, as they finish: the first to finish comes first.</summary>
    public async Task<CopyOutcome?> NextAsync(BackupRun run)
    {
        var copies = _runs[run];
        var left = copies.Tasks.Where(t => !copies.HandedOn.Contains(t.Key)).ToList();
        if (left.Count == 0)
            return null;
        var done = await Task.WhenAny(left.Select(t => t.Value)).ConfigureAwait(false);
        var target = left.First(t => t.Value == done).Key;
        copies.HandedOn.Add(target);
        if (copies.Tasks.Keys.All(copies.HandedOn.Contains))
            _sink.Progress(new ProgressUpdate(copies.ProgressId, null, $"Copying {run.DomainName} to {_store.Location}", "Done", 100, Completed: true));
        try
        {
            return await done.ConfigureAwait(false);
        }
        catch
        {
            await copies.Stop.CancelAsync().ConfigureAwait(false);
            foreach (var other in copies.Tasks.Values)
                await other.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>True once every copy of the run was handed on (or the run's copies were given up).</summary>
    public bool AllHandedOn(BackupRun run) => _runs.TryGetValue(run, out var copies) && copies.Tasks.Keys.All(copies.HandedOn.Contains);

    public bool HandedOn(VmDiskBackup disk) => _runs.TryGetValue(disk.Run, out var copies) && copies.HandedOn.Contains(disk.Target);

    public bool Started(BackupRun run) => _runs.ContainsKey(run);

    /// <summary>Stops a run's copies (its run failed): what was written is removed by the run's rollback.</summary>
    public async Task AbandonAsync(BackupRun run)
    {
        if (!_runs.TryGetValue(run, out var copies))
            return;
        await copies.Stop.CancelAsync().ConfigureAwait(false);
        foreach (var (target, task) in copies.Tasks)
        {
            await task.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
            copies.HandedOn.Add(target);
        }
    }

    /// <summary>Waits for every read-back check; returns the ones that failed (their sets are marked Incomplete).
    /// Returned as values, not thrown: one failed check must not stop the waiting for, or the reporting of, the others
    /// (one VM's failure never stops the others).</summary>
    public async Task<IReadOnlyList<BackupException>> FinishVerificationsAsync()
    {
        List<Task> checks;
        lock (_verifications)
        {
            checks = _verifications.ToList();
            _verifications.Clear();
        }
        var failed = new List<BackupException>();
        foreach (var check in checks)
        {
            try
            {
                await check.ConfigureAwait(false);
            }
            catch (BackupException error)
            {
                failed.Add(error);
            }
        }
        return failed;
    }

    /// <summary>Copies one disk once <paramref name="before"/> (the copies of its VM's much smaller disks) has ended.</summary>
    private async Task<CopyOutcome> CopyOneAsync(BackupRun run, VmDiskBackup disk, RunCopies copies, Task before, CancellationToken ct)
    {
        var started = DateTime.UtcNow;
        var record = run.Record.Disk(disk.Target);
        var slot = false;
        try
        {
            if (!before.IsCompleted)
            {
                _sink.Verbose($"{disk.Target} of {disk.DomainName}: copied after the disks of its VM under a quarter of its size.");
                // Their failure is theirs: it stops this copy through ct.
                await before.WaitAsync(ct).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                ct.ThrowIfCancellationRequested();
            }
            // Inside the try: a copy stopped while it waits for its slot is given up like any other.
            await _slots.WaitAsync(ct).ConfigureAwait(false);
            slot = true;
            started = DateTime.UtcNow;
            var set = await run.EnsureSetAsync(_store, _force, ct).ConfigureAwait(false);
            var partial = BackupNames.PartialInSet(set, record.SetFile);
            var listPartial = BackupNames.Partial(BackupNames.DigestListInSet(set, record.SetFile));
            var prepared = await Bases.TakeAsync(run.DomainName, run.RunId, record, ct).ConfigureAwait(false);
            var (writer, stored) = await OpenCopyAsync(run, disk, partial, prepared, ct).ConfigureAwait(false);
            var progressId = ProgressIds.Copy * 1000 + Interlocked.Increment(ref _progressIds);
            CopyResult copy;
            // A clone that fails stops the copy reading meanwhile at once: the disk is then read again, in full.
            using var cloneFailed = writer is CloneThenWrite clone ? CancellationTokenSource.CreateLinkedTokenSource(ct, clone.Failed) : null;
            try
            {
                copy = await RunEngineAsync(disk, copies, writer, stored.Base, progressId, cloneFailed?.Token ?? ct).ConfigureAwait(false);
                if (writer is CloneThenWrite cloned)
                {
                    var (storedAs, bytesCloned) = cloned.Stored;
                    stored = stored with { StoredAs = storedAs, BytesCloned = bytesCloned };
                }
            }
            catch (Exception) when (writer is CloneThenWrite { FailedBecause: { } why } && !ct.IsCancellationRequested)
            {
                // The destination could not clone the base (found while the copy ran): the disk, still frozen, is
                // copied in full instead.
                (copy, stored) = await CopyAgainInFullAsync(run, disk, copies, partial, why, progressId, ct).ConfigureAwait(false);
            }
            if (stored.Base is { } based && prepared is { Base: { } chosen, ReadBack: { } readBack })
            {
                // The base's read-back (done before the snapshot; without a preflight, run meanwhile): a base that
                // rotted where the copy had passed gets those segments sent again from the frozen disk; one that could
                // not be read back at all gets a full copy instead.
                var found = await readBack.WaitAsync(ct).ConfigureAwait(false);
                if (found.CouldNotRead is { } why)
                {
                    (copy, stored) = await CopyAgainInFullAsync(run, disk, copies, partial, why, progressId, ct).ConfigureAwait(false);
                }
                else if (found.RottedSegments.Count > 0)
                {
                    _sink.Warning(Bases.RottedWarning(disk.DomainName, disk.Target, chosen, found.RottedSegments));
                    var late = found.RottedSegments.Except(based.RottedSegments).ToList();
                    if (late.Count > 0)
                    {
                        await using var again = await _store.OpenForWriteAsync(partial, ct).ConfigureAwait(false);
                        var resent = await SparseCopy.ResendSegmentsAsync(record.Source, again, late, copy.SizeBytes, ct).ConfigureAwait(false);
                        copy = copy with { BytesSent = copy.BytesSent + resent, BytesResent = copy.BytesResent + resent };
                    }
                }
            }
            // The list goes with the copy: written as a partial beside it, renamed with it once the copy is verified.
            await WriteListAsync(listPartial, copy.Digests, ct).ConfigureAwait(false);
            if (run.Consistency == BackupConsistency.Cold)
                await RequireStillShutOffAsync(disk, ct).ConfigureAwait(false);
            run.RecordCopied(disk.Target, copy, stored.StoredAs, stored.BytesCloned);
            lock (_verifications)
                _verifications.Add(VerifyAsync(run, disk, set, copy));
            return new CopyOutcome(disk, DateTime.UtcNow - started);
        }
        catch (Exception ex)
        {
            run.CopyAbandoned(disk.Target);
            if (ex is OperationCanceledException)
                throw;
            throw Explain(ex, disk);
        }
        finally
        {
            if (slot)
                _slots.Release();
        }
    }

    /// <summary>Runs the copy engine into <paramref name="writer"/> (disposed after), with a progress bar per disk
    /// under one for the VM.</summary>
    private async Task<CopyResult> RunEngineAsync(VmDiskBackup disk, RunCopies copies, IStoreFileWriter writer, CopyBase? based, int progressId, CancellationToken ct)
    {
        var activity = $"Copying {disk.Target} of {disk.DomainName}";
        await using (writer)
        {
            var rate = new RateMeter();
            var copy = await SparseCopy.CopyAsync(disk.Run.Record.Disk(disk.Target).Source, writer, based, _bandwidth, p =>
            {
                // A bar per disk under one for the VM: compared and sent bytes, rate and time left for each.
                _sink.Progress(new ProgressUpdate(progressId, copies.ProgressId, activity, Status(rate, p.Compared, p.Sent, p.Total), Percent(p.Compared, p.Total)));
                var (vmCompared, vmSent, vmTotal) = copies.Report(disk.Target, p);
                _sink.Progress(new ProgressUpdate(copies.ProgressId, null, $"Copying {disk.DomainName} to {_store.Location}",
                    Status(copies.Rate, vmCompared, vmSent, vmTotal), Percent(vmCompared, vmTotal)));
            }, ct).ConfigureAwait(false);
            _sink.Progress(new ProgressUpdate(progressId, copies.ProgressId, activity, "Done", 100, Completed: true));
            return copy;
        }
    }

    /// <summary>The base could not be read back (found while the copy ran): the incremental copy is thrown away and
    /// the disk, still frozen, copied again in full into a new file.</summary>
    private async Task<(CopyResult Copy, StartedCopy Stored)> CopyAgainInFullAsync(BackupRun run, VmDiskBackup disk, RunCopies copies, string partial,
        string why, int progressId, CancellationToken ct)
    {
        _sink.Verbose($"{disk.Target} of {disk.DomainName}: copied again in full, because {why}.");
        await _store.DeleteAsync(partial, recursive: false, ct).ConfigureAwait(false);
        run.RecordCopyStart(disk.Target, null, why);
        var writer = await _store.CreateFileAsync(partial, ct).ConfigureAwait(false);
        return (await RunEngineAsync(disk, copies, writer, null, progressId, ct).ConfigureAwait(false), new StartedCopy(null, StoredAsFull, 0));
    }

    /// <summary>The file's length; a block device (length 0) by its virtual size.</summary>
    private static long SizeToRead(DiskRecord disk)
    {
        try
        {
            var length = new FileInfo(disk.Source).Length;
            return length > 0 ? length : disk.VirtualSizeBytes ?? 0;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return 0; // the copy itself says what is wrong with the file
        }
    }

    private static int Percent(long done, long total) => total == 0 ? 100 : (int)(done * 100 / total);

    private static string Status(RateMeter rate, long compared, long sent, long total) =>
        $"compared {rate.Describe(compared, total)}; sent {FileSystemPaths.FormatBytes(sent)}";

    /// <summary>How the new copy starts: a clone of the base copy made where it lies (the base itself is only read),
    /// written into at the blocks that differ, the clone made while the copy reads (<see cref="CloneThenWrite"/>);
    /// or, without a base, an empty file for a full copy. The journal says which before the file is made.</summary>
    private async Task<(IStoreFileWriter Writer, StartedCopy Stored)> OpenCopyAsync(BackupRun run, VmDiskBackup disk, string partial, PreparedBase prepared, CancellationToken ct)
    {
        var fullBecause = prepared.FullBecause;
        // A read-back that has failed already: no clone, a full copy at once.
        if (prepared.ReadBack is { IsCompletedSuccessfully: true } done && done.Result.CouldNotRead is { } couldNotRead)
        {
            fullBecause = couldNotRead;
            _sink.Verbose($"{disk.Target} of {disk.DomainName}: copied in full, because {fullBecause}.");
        }
        else if (prepared.Base is { } chosen)
        {
            run.RecordCopyStart(disk.Target, chosen.RunId, null);
            // Segments the read-back found rotted by now are sent again by the engine itself; later ones after it.
            var rottedSoFar = prepared.ReadBack is { IsCompletedSuccessfully: true } early ? early.Result.RottedSegments : new HashSet<long>();
            // How it was stored is known once the clone is made (CopyOneAsync).
            return (new CloneThenWrite(_store, chosen, partial, ct), new StartedCopy(new CopyBase(chosen.List, rottedSoFar), FileClone.Reflink, 0));
        }
        run.RecordCopyStart(disk.Target, null, fullBecause);
        return (await _store.CreateFileAsync(partial, ct).ConfigureAwait(false), new StartedCopy(null, StoredAsFull, 0));
    }

    /// <summary>How a copy that is not based on another set is stored (see <see cref="ManifestDisk.StoredAs"/>).</summary>
    public const string StoredAsFull = "full";

    private sealed record StartedCopy(CopyBase? Base, string StoredAs, long BytesCloned);

    /// <summary>Writes the digest list as a file (it may be tens of MB: not the small-file writer), synced.</summary>
    private async Task WriteListAsync(string relative, BlockDigestList list, CancellationToken ct)
    {
        const int Piece = 1 << 20;
        await using var writer = await _store.CreateFileAsync(relative, ct).ConfigureAwait(false);
        var bytes = list.Bytes;
        for (var offset = 0; offset < bytes.Length; offset += Piece)
            await writer.WriteAsync(offset, bytes.Slice(offset, Math.Min(Piece, bytes.Length - offset)), ct).ConfigureAwait(false);
        await writer.CompleteAsync(bytes.Length, ct).ConfigureAwait(false);
    }

    /// <summary>Reads the copy back from the destination's storage, whole, compares it with the digests taken while
    /// reading the source, and only then gives it and its digest list their final names. A check that fails marks
    /// the set Incomplete and throws.</summary>
    private async Task VerifyAsync(BackupRun run, VmDiskBackup disk, string set, CopyResult copy)
    {
        var file = run.Record.Disk(disk.Target).SetFile;
        var partial = BackupNames.PartialInSet(set, file);
        var list = BackupNames.DigestListInSet(set, file);
        var listPartial = BackupNames.Partial(list);
        try
        {
            var verifiedBy = _store.IsRemote
                ? await VerifyOnServerAsync(disk, partial, copy).ConfigureAwait(false)
                : await VerifyLocalAsync(disk, partial, copy).ConfigureAwait(false);
            var listEntry = await _store.GetEntryAsync(listPartial, CancellationToken.None).ConfigureAwait(false);
            if (listEntry is null || listEntry.Size != copy.Digests.Bytes.Length)
                throw Mismatch(disk, $"its digest list holds {listEntry?.Size ?? 0} bytes instead of {copy.Digests.Bytes.Length}");
            await _store.RenameAsync(listPartial, list, CancellationToken.None).ConfigureAwait(false);
            await _store.RenameAsync(partial, BackupNames.FileInSet(set, file), CancellationToken.None).ConfigureAwait(false);
            await run.RecordVerifiedAsync(disk.Target, verifiedBy, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is BackupException or IOException or UnauthorizedAccessException)
        {
            if (run.Abandoned)
                return; // the run failed and was reported; its set is Incomplete already
            var cause = ex as BackupException ?? StoreErrors.FromIOException(ex, _store.Describe(partial));
            var error = new BackupException(cause.ErrorId, cause.Category, cause.Message, cause.RecommendedAction, disk.DomainName, cause);
            try
            {
                await run.MarkSetIncompleteAsync($"the copy of {disk.Target} failed its check: {error.Message}", CancellationToken.None).ConfigureAwait(false);
                await _store.DeleteAsync(partial, recursive: false, CancellationToken.None).ConfigureAwait(false);
                await _store.DeleteAsync(listPartial, recursive: false, CancellationToken.None).ConfigureAwait(false);
                await _store.DeleteAsync(list, recursive: false, CancellationToken.None).ConfigureAwait(false); // renamed before the copy's rename failed
            }
            catch (Exception inner) when (inner is BackupException or IOException)
            {
                _sink.Warning($"The set of '{disk.DomainName}' could not be marked Incomplete: {inner.Message}");
            }
            throw error;
        }
    }

    /// <summary>Reads the copy back from the destination's storage (its pages dropped from the cache first) and takes
    /// its digest list again: equal to the source's only when every byte is.</summary>
    private async Task<string> VerifyLocalAsync(VmDiskBackup disk, string partial, CopyResult copy)
    {
        var readBack = await SparseCopy.DigestListAsync(_store.Describe(partial), null, CancellationToken.None).ConfigureAwait(false);
        if (readBack.Sha256 != copy.Digests.Sha256)
        {
            var list = copy.Digests;
            var segment = readBack.FileSize != list.FileSize ? -1
                : list.DifferingSegments(readBack).First();
            throw Mismatch(disk, segment < 0
                ? $"{readBack.FileSize} bytes stored instead of {list.FileSize}"
                : $"the 16 MiB segment at offset {segment * BlockDigestList.SegmentSize} reads {readBack.SegmentDigestHex(segment)} instead of {list.SegmentDigestHex(segment)}");
        }
        return $"read back whole from the destination's storage (page cache dropped): its digest list, taken again in .NET, equal to the one taken while reading the source ({copy.Digests.SegmentCount} segments of 16 MiB)";
    }

    /// <summary>Has the server read the copy back, whole (never over the network): each segment that holds data by
    /// its SHA-256 computed there, each segment of zeros by reading as zeros there (see <see cref="RemoteCopyCheck"/>).
    /// All of the copy, not only the blocks sent: what the clone took from the base is checked too.</summary>
    private async Task<string> VerifyOnServerAsync(VmDiskBackup disk, string partial, CopyResult copy)
    {
        var list = copy.Digests;
        var entry = await _store.GetEntryAsync(partial, CancellationToken.None).ConfigureAwait(false);
        if (entry is null || entry.Size != copy.SizeBytes)
            throw Mismatch(disk, $"{entry?.Size ?? 0} bytes stored instead of {copy.SizeBytes}");
        var check = await RemoteCopyCheck.RunAsync(_store, partial, list, findAll: false, null, CancellationToken.None).ConfigureAwait(false);
        if (check.Failed is { } failed)
        {
            var offset = failed.Segment * BlockDigestList.SegmentSize;
            throw Mismatch(disk, failed.ZerosExpected
                ? $"the 16 MiB segment at offset {offset} holds data on the server (from byte {failed.FirstData}) where the source has only zeros"
                : $"the 16 MiB segment at offset {offset} reads {failed.Digest} on the server instead of {failed.Expected}");
        }
        return $"read back whole on the server: the SHA-256 of each of the {check.DataSegments} 16 MiB segments that hold data, computed there{(_store.DigestTool is { } tool ? " with " + tool : "")}, " +
            $"equal to the digest list taken while reading the source, and each of the {check.ZeroSegments} segments of zeros read as zeros there";
    }

    private static BackupException Mismatch(VmDiskBackup disk, string what) =>
        new(ErrorIds.CopyVerificationFailed, BackupErrorCategory.InvalidData,
            $"The copy of {disk.Target} of '{disk.DomainName}' reads back differently from '{disk.Source}' ({what}). The backup set is marked Incomplete.",
            "Check the destination's storage (dmesg, file system errors, the server's disks), then back up again.", disk.DomainName);

    private async Task RequireStillShutOffAsync(VmDiskBackup disk, CancellationToken ct)
    {
        var state = await _tools.Virsh.GetStateAsync(disk.DomainName, ct).ConfigureAwait(false);
        if (state is not ("shut off" or "crashed"))
        {
            throw new BackupException(ErrorIds.DomainStartedDuringColdCopy, BackupErrorCategory.InvalidOperation,
                $"'{disk.DomainName}' was started while its disks were being copied cold; the copy of {disk.Target} may be inconsistent.",
                "Back it up again while it runs (a hot backup) or while it stays shut off.", disk.DomainName);
        }
    }

    private BackupException Explain(Exception ex, VmDiskBackup disk) => ex switch
    {
        BackupException { ErrorId: ErrorIds.DestinationFull } full => new BackupException(ErrorIds.DestinationFull, BackupErrorCategory.WriteError,
            $"The destination '{_store.Location}' ran out of space while copying {disk.Target} of '{disk.DomainName}'.",
            "Free space there or choose another -Destination, then back up again.", disk.DomainName, full),
        BackupException backup => backup,
        IOException or UnauthorizedAccessException when StoreErrors.IsNoSpace(ex) => new BackupException(ErrorIds.DestinationFull, BackupErrorCategory.WriteError,
            $"The destination '{_store.Location}' ran out of space while copying {disk.Target} of '{disk.DomainName}'.",
            "Free space there or choose another -Destination, then back up again.", disk.DomainName, ex),
        IOException or UnauthorizedAccessException => new BackupException(ErrorIds.CopyFailed, BackupErrorCategory.WriteError,
            $"Copying {disk.Target} of '{disk.DomainName}' from '{disk.Source}' to '{_store.Location}' failed: {ex.Message}",
            "Fix the cause named above, then back up again.", disk.DomainName, ex),
        _ => new BackupException(ErrorIds.CopyFailed, BackupErrorCategory.InvalidResult,
            $"Copying {disk.Target} of '{disk.DomainName}' failed unexpectedly: {ex.GetType().Name}: {ex.Message}",
            "Back up again with -Verbose; if it happens again, report it with that output.", disk.DomainName, ex),
    };

    private sealed class RunCopies(BackupRun run, CancellationTokenSource stop)
    {
        private readonly Dictionary<string, CopyProgress> _bytes = new(StringComparer.Ordinal);

        public BackupRun Run { get; } = run;
        public CancellationTokenSource Stop { get; } = stop;
        public Dictionary<string, Task<CopyOutcome>> Tasks { get; } = new(StringComparer.Ordinal);
        public HashSet<string> HandedOn { get; } = new(StringComparer.Ordinal);
        public int ProgressId { get; set; }
        public RateMeter Rate { get; } = new();

        /// <summary>One disk's progress; returns the whole VM's (disks not started yet count once they start).</summary>
        public (long Compared, long Sent, long Total) Report(string target, CopyProgress progress)
        {
            lock (_bytes)
            {
                _bytes[target] = progress;
                return (_bytes.Values.Sum(b => b.Compared), _bytes.Values.Sum(b => b.Sent), _bytes.Values.Sum(b => b.Total));
            }
        }
    }
}
