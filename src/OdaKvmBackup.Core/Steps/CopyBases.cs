namespace OdaKvmBackup.Core.Steps;

/// <summary>What the copy of one disk starts from (issue 15): the base set's copy, with the segments of it that no
/// longer read as its digest list says (sent again in full), or no base and why the copy is full.</summary>
internal sealed record PreparedBase(DiskBase? Base, IReadOnlySet<long> RottedSegments, string? FullBecause)
{
    public static PreparedBase Full(string why) => new(null, new HashSet<long>(), why);
}

/// <summary>
/// Chooses the base of each disk's copy (<see cref="BaseFinder"/>) and reads that base copy back where it lies,
/// segment by segment against its digest list, before the snapshot (Copy-VmDisk's part of the preflight): the VM
/// spends no time on its overlays for it, and a segment that rotted in the base set is known before the copy, which
/// then sends it again. The choice is kept here, per run and disk, until the copy takes it; a copy whose run had no
/// preflight here (Copy-VmDisk in a pipeline of its own) makes it then.
/// </summary>
internal sealed class CopyBases(IBackupStore store, bool full, IOperationSink sink)
{
    private readonly Dictionary<(string Domain, string RunId, string Target), PreparedBase> _prepared = new();

    /// <summary>Before the snapshot: the base of every disk of the run, a rotted base as a warning of the preflight.</summary>
    public async Task PrepareAsync(PreflightContext context, CancellationToken ct)
    {
        foreach (var disk in context.Disks)
        {
            var prepared = await ChooseAsync(context.DomainName, context.RunId, disk, ct).ConfigureAwait(false);
            if (RottedWarning(context.DomainName, disk, prepared) is { } warning)
                context.Warnings.Add(warning);
            lock (_prepared)
                _prepared[(context.DomainName, context.RunId, disk.Target)] = prepared;
        }
    }

    /// <summary>The base chosen for the disk before the snapshot (taken once), or chosen now when there was no preflight.</summary>
    public async Task<PreparedBase> TakeAsync(string domain, string runId, DiskRecord disk, CancellationToken ct)
    {
        lock (_prepared)
        {
            if (_prepared.Remove((domain, runId, disk.Target), out var prepared))
                return prepared;
        }
        var now = await ChooseAsync(domain, runId, disk, ct).ConfigureAwait(false);
        if (RottedWarning(domain, disk, now) is { } warning)
            sink.Warning(warning);
        return now;
    }

    private async Task<PreparedBase> ChooseAsync(string domain, string runId, DiskRecord disk, CancellationToken ct)
    {
        var prepared = await FindAsync(domain, runId, disk, ct).ConfigureAwait(false);
        sink.Verbose(prepared.Base is { } chosen
            ? $"{disk.Target} of {domain}: based on set {chosen.RunId} ('{store.Describe(chosen.CopyPath)}'); {(prepared.RottedSegments.Count == 0
                ? $"its copy reads back as its digest list says (all {chosen.List.SegmentCount} segments of 16 MiB)"
                : $"{prepared.RottedSegments.Count} of its {chosen.List.SegmentCount} segments of 16 MiB no longer read as its digest list says and are sent again in full")}; only the blocks that differ are sent."
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
        try
        {
            return new PreparedBase(found, await RottedSegmentsAsync(disk, found, ct).ConfigureAwait(false), null);
        }
        catch (Exception ex) when (ex is BackupException or IOException or UnauthorizedAccessException)
        {
            return PreparedBase.Full($"the copy of {disk.Target} in set {found.RunId} could not be read back ({ex.Message.TrimEnd('.')})");
        }
    }

    private string? RottedWarning(string domain, DiskRecord disk, PreparedBase prepared) =>
        prepared.Base is { } chosen && prepared.RottedSegments.Count > 0
            ? $"The backup set {chosen.RunId} of '{domain}' at '{store.Location}' is damaged: {prepared.RottedSegments.Count} segment(s) of 16 MiB of its copy of {disk.Target} " +
              $"('{store.Describe(chosen.CopyPath)}') no longer read as when it was written (first at offset {prepared.RottedSegments.Min() * BlockDigestList.SegmentSize}). " +
              $"The new set does not inherit them: they are sent again. Check that set and the destination's storage: Test-KvmBackup -Destination '{store.Location}' -DomainName {domain} -RunId {chosen.RunId}."
            : null;

    /// <summary>The segments of the base copy that read differently where it lies from what its list says: read
    /// back whole (locally, its pages dropped first; on an SSH server, there: the segments that hold data by their
    /// SHA-256, the others by reading as zeros).</summary>
    private async Task<IReadOnlySet<long>> RottedSegmentsAsync(DiskRecord disk, DiskBase chosen, CancellationToken ct)
    {
        var list = chosen.List;
        var rotted = new HashSet<long>();
        if (!store.IsRemote)
        {
            var progressId = ProgressIds.Copy * 1000 + 999;
            var activity = $"Reading back the copy of {disk.Target} in set {chosen.RunId}";
            var readBack = await SparseCopy.DigestListAsync(store.Describe(chosen.CopyPath),
                (done, total) => sink.Progress(new ProgressUpdate(progressId, null, activity, $"{FileSystemPaths.FormatBytes(done)} of {FileSystemPaths.FormatBytes(total)}", total == 0 ? 100 : (int)(done * 100 / total))),
                ct).ConfigureAwait(false);
            sink.Progress(new ProgressUpdate(progressId, null, activity, "Done", 100, Completed: true));
            if (readBack.FileSize != list.FileSize)
                throw new IOException($"it holds {readBack.FileSize} bytes, not the {list.FileSize} of its digest list");
            for (long segment = 0; segment < list.SegmentCount; segment++)
            {
                if (!readBack.SegmentDigest(segment).SequenceEqual(list.SegmentDigest(segment)))
                    rotted.Add(segment);
            }
            return rotted;
        }
        var withData = new List<long>();
        var zeros = new List<(long Offset, long Length)>();
        for (long segment = 0; segment < list.SegmentCount; segment++)
        {
            if (!list.SegmentDigest(segment).SequenceEqual(BlockDigestList.ZeroSegmentDigest))
            {
                withData.Add(segment);
                continue;
            }
            var offset = segment * BlockDigestList.SegmentSize;
            if (zeros.Count > 0 && zeros[^1].Offset + zeros[^1].Length == offset)
                zeros[^1] = (zeros[^1].Offset, zeros[^1].Length + BlockDigestList.SegmentSize);
            else
                zeros.Add((offset, BlockDigestList.SegmentSize));
        }
        if (withData.Count > 0)
        {
            var stored = await store.SegmentDigestsAsync(chosen.CopyPath, BlockDigestList.SegmentSize, withData, ct).ConfigureAwait(false);
            for (var i = 0; i < withData.Count; i++)
            {
                if (i >= stored.Count || !list.SegmentMatches(withData[i], stored[i]))
                    rotted.Add(withData[i]);
            }
        }
        // A range of zero segments that holds data somewhere: that segment rotted; the rest of the range is asked again.
        while (zeros.Count > 0)
        {
            var found = await store.FindNonZeroAsync(chosen.CopyPath, zeros, ct).ConfigureAwait(false);
            var again = new List<(long Offset, long Length)>();
            foreach (var first in found)
            {
                if (zeros.FirstOrDefault(r => first >= r.Offset && first < r.Offset + r.Length) is not { Length: > 0 } range)
                    throw new IOException($"the server named offset {first}, outside the ranges it was asked about");
                var segment = first / BlockDigestList.SegmentSize;
                rotted.Add(segment);
                var next = (segment + 1) * BlockDigestList.SegmentSize;
                if (next < range.Offset + range.Length)
                    again.Add((next, range.Offset + range.Length - next));
            }
            zeros = again;
        }
        return rotted;
    }
}
