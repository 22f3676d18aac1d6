namespace OdaKvmBackup.Core.Steps;

/// <summary>What the copy of one disk starts from (issue 15): the base set's copy and its read-back where it lies
/// (done before the snapshot, or running while the copy runs when there was no preflight), or no base and why the
/// copy is full.</summary>
internal sealed record PreparedBase(DiskBase? Base, Task<BaseReadBack>? ReadBack, string? FullBecause)
{
    public static PreparedBase Full(string why) => new(null, null, why);
}

/// <summary>The base copy read back where it lies against its digest list: the segments that no longer read as the
/// list says (sent again in full), or why it could not be read back (then the copy is made in full).</summary>
internal sealed record BaseReadBack(IReadOnlySet<long> RottedSegments, string? CouldNotRead)
{
    public static BaseReadBack Failed(string why) => new(new HashSet<long>(), why);
}

/// <summary>
/// Chooses the base of each disk's copy (<see cref="BaseFinder"/>) before the snapshot (Copy-VmDisk's part of the
/// preflight), and reads that base copy back where it lies, segment by segment against its digest list, before the
/// snapshot too: the VM is not on its overlays while the destination reads, however slow its disks. A segment found
/// rotted is sent again in full from the frozen disk before the copy is done (<see cref="CopyService"/>), so no error
/// of the base is inherited; a base that cannot be read back makes the copy a full one. The choice is kept here, per
/// run and disk, until the copy takes it; a copy whose run had no preflight here (Copy-VmDisk in a pipeline of its
/// own) makes it then, and reads the base back while it copies.
/// </summary>
internal sealed class CopyBases(IBackupStore store, bool full, IOperationSink sink) : IDisposable
{
    private readonly Dictionary<(string Domain, string RunId, string Target), PreparedBase> _prepared = new();
    // The read-backs outlive the preflight that starts them: they stop with the copy step (Dispose), not before.
    private readonly CancellationTokenSource _stop = new();
    private int _progressIds;

    /// <summary>Before the snapshot: the base of every disk of the run, its read-back started (<see cref="SmallDisksFirst"/>).</summary>
    public async Task PrepareAsync(PreflightContext context, CancellationToken ct)
    {
        var found = new List<(DiskRecord Disk, PreparedBase Prepared)>();
        foreach (var disk in context.Disks)
        {
            // The plan records the virtual size after the checks; the base of a qcow2 disk is chosen by it now.
            disk.VirtualSizeBytes ??= context.KnownImageInfo(disk.Source)?.VirtualSize;
            found.Add((disk, await FindAsync(context.DomainName, context.RunId, disk, ct).ConfigureAwait(false)));
        }
        var readBacks = SmallDisksFirst.Start(found, f => f.Prepared.Base?.List.DataBytes() ?? 0, (f, before) =>
        {
            var started = StartReadBack(context.DomainName, f.Disk, f.Prepared, before);
            lock (_prepared)
                _prepared[(context.DomainName, context.RunId, f.Disk.Target)] = started;
            return started.ReadBack ?? Task.CompletedTask;
        });
        // Waited for here, before the snapshot, not while the disks are copied: the VM is not kept on its overlays
        // while the destination reads (a backup server's disks may read far slower than the host's), and a rotted
        // segment is known before the copy passes it (the engine sends it again as it goes). A read-back never
        // throws: one that fails makes its disk's copy a full one.
        await Task.WhenAll(readBacks).WaitAsync(ct).ConfigureAwait(false);
    }

    /// <summary>The base chosen for the disk before the snapshot (taken once), or chosen now when there was no preflight.</summary>
    public async Task<PreparedBase> TakeAsync(string domain, string runId, DiskRecord disk, CancellationToken ct)
    {
        lock (_prepared)
        {
            if (_prepared.Remove((domain, runId, disk.Target), out var prepared))
                return prepared;
        }
        return await ChooseAsync(domain, runId, disk, ct).ConfigureAwait(false);
    }

    /// <summary>Stops the read-backs still running (a run given up before its copies took them). Cancelled, never
    /// disposed: a copy still choosing its base (the copy step does not wait for it) reads the token afterwards, and
    /// its read-back then says it could not be read back.</summary>
    public void Dispose() => _stop.Cancel();

    /// <summary>The warning for a base whose copy rotted: the damaged set named, with the way to check it.</summary>
    public string RottedWarning(string domain, string target, DiskBase chosen, IReadOnlySet<long> rotted) =>
        $"The backup set {chosen.RunId} of '{domain}' at '{store.Location}' is damaged: {rotted.Count} segment(s) of 16 MiB of its copy of {target} " +
        $"('{store.Describe(chosen.CopyPath)}') no longer read as when it was written (first at offset {rotted.Min() * BlockDigestList.SegmentSize}). " +
        $"The new set does not inherit them: they are sent again. Check that set and the destination's storage: Test-KvmBackup -Destination '{store.Location}' -DomainName {domain} -RunId {chosen.RunId}.";

    private async Task<PreparedBase> ChooseAsync(string domain, string runId, DiskRecord disk, CancellationToken ct) =>
        StartReadBack(domain, disk, await FindAsync(domain, runId, disk, ct).ConfigureAwait(false), Task.CompletedTask);

    /// <summary>Says what was chosen and starts the base's read-back once <paramref name="before"/> has ended.</summary>
    private PreparedBase StartReadBack(string domain, DiskRecord disk, PreparedBase prepared, Task before)
    {
        if (prepared.Base is { } based)
        {
            var stop = _stop.Token; // here, not on the thread pool
            prepared = prepared with
            {
                ReadBack = Task.Run(async () =>
                {
                    await before.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                    return await ReadBackAsync(domain, disk, based, stop).ConfigureAwait(false);
                }),
            };
        }
        sink.Verbose(prepared.Base is { } chosen
            ? $"{disk.Target} of {domain}: based on set {chosen.RunId} ('{store.Describe(chosen.CopyPath)}'); only the blocks that differ are sent, and the base copy is read back where it lies first (all {chosen.List.SegmentCount} segments of 16 MiB)."
            : $"{disk.Target} of {domain}: copied in full, because {prepared.FullBecause}.");
        return prepared;
    }

    private async Task<PreparedBase> FindAsync(string domain, string runId, DiskRecord disk, CancellationToken ct)
    {
        if (full)
            return PreparedBase.Full("-Full was given");
        BaseChoice choice;
        try
        {
            choice = await BaseFinder.FindAsync(store, domain, runId, disk, ct).ConfigureAwait(false);
        }
        catch (BackupException ex)
        {
            return PreparedBase.Full($"the earlier sets at '{store.Location}' could not be looked at ({ex.Message.TrimEnd('.')})");
        }
        if (choice.Base is not { } found)
            return PreparedBase.Full(choice.WhyNone ?? "no earlier Complete set has a usable copy of it");
        return new PreparedBase(found, null, null);
    }

    /// <summary>The read-back of a base copy; never throws: a failure is a reason for a full copy.</summary>
    private async Task<BaseReadBack> ReadBackAsync(string domain, DiskRecord disk, DiskBase chosen, CancellationToken ct)
    {
        try
        {
            var rotted = await RottedSegmentsAsync(domain, disk, chosen, ct).ConfigureAwait(false);
            sink.Verbose(rotted.Count == 0
                ? $"{disk.Target} of {domain}: the copy in set {chosen.RunId} reads back as its digest list says (all {chosen.List.SegmentCount} segments of 16 MiB)."
                : $"{disk.Target} of {domain}: {rotted.Count} of the {chosen.List.SegmentCount} segments of 16 MiB of the copy in set {chosen.RunId} no longer read as its digest list says; they are sent again in full.");
            return new BaseReadBack(rotted, null);
        }
        catch (Exception ex) when (ex is BackupException or IOException or UnauthorizedAccessException or OperationCanceledException)
        {
            return BaseReadBack.Failed($"the copy of {disk.Target} in set {chosen.RunId} could not be read back ({ex.Message.TrimEnd('.')})");
        }
    }

    /// <summary>The segments of the base copy that read differently where it lies from what its list says: read
    /// back whole (locally, its pages dropped first; on an SSH server, there: see <see cref="RemoteCopyCheck"/>).</summary>
    private async Task<IReadOnlySet<long>> RottedSegmentsAsync(string domain, DiskRecord disk, DiskBase chosen, CancellationToken ct)
    {
        var list = chosen.List;
        // Ids from 900 down: the copies' own bars count up from 1 (CopyService).
        var progressId = ProgressIds.Copy * 1000 + 900 - Interlocked.Increment(ref _progressIds) % 100;
        var activity = $"Reading back the copy of {disk.Target} of {domain} in set {chosen.RunId}";
        Action<long, long> progress = (done, total) => sink.Progress(new ProgressUpdate(progressId, null, activity, $"{FileSystemPaths.FormatBytes(done)} of {FileSystemPaths.FormatBytes(total)}", total == 0 ? 100 : (int)(done * 100 / total)));
        try
        {
            if (store.IsRemote)
            {
                var check = await RemoteCopyCheck.RunAsync(store, chosen.CopyPath, list, findAll: true, progress, ct).ConfigureAwait(false);
                return check.Differing.Select(f => f.Segment).ToHashSet();
            }
            var readBack = await SparseCopy.DigestListAsync(store.Describe(chosen.CopyPath), progress, ct).ConfigureAwait(false);
            if (readBack.FileSize != list.FileSize)
                throw new IOException($"it holds {readBack.FileSize} bytes, not the {list.FileSize} of its digest list");
            return list.DifferingSegments(readBack).ToHashSet();
        }
        finally
        {
            sink.Progress(new ProgressUpdate(progressId, null, activity, "Done", 100, Completed: true));
        }
    }
}
