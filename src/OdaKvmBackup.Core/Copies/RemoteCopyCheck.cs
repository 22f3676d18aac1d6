namespace OdaKvmBackup.Core.Copies;

/// <summary>
/// How a copy on another host is checked where it lies, after it is written (Copy-VmDisk) and later
/// (Test-KvmBackup): each segment that held data, by its SHA-256 computed on the server; each segment that held only
/// zeros (it has no digest), by reading as zeros there, so a server that put data into a hole is caught too. Only
/// digests and offsets cross the network.
/// </summary>
internal static class RemoteCopyCheck
{
    /// <summary>What was checked, and the first segment that failed (null when the copy is good).</summary>
    public sealed record Outcome(int DataSegments, long ZeroSegments, Failure? Failed);

    /// <summary>The segment that reads differently: one that should hold only zeros and holds data from byte
    /// <c>FirstData</c> on (<c>ZerosExpected</c>), or one whose digest on the server is <c>Digest</c>, not <c>Expected</c>.</summary>
    public sealed record Failure(long Segment, bool ZerosExpected, long FirstData, string? Digest, string? Expected);

    public static async Task<Outcome> RunAsync(IBackupStore store, string relativePath, long size, long segmentSize,
        IReadOnlyDictionary<long, string> digests, CancellationToken ct)
    {
        var indexes = digests.Keys.Order().ToList();
        if (indexes.Count > 0)
        {
            var stored = await store.SegmentDigestsAsync(relativePath, segmentSize, indexes, ct).ConfigureAwait(false);
            for (var i = 0; i < indexes.Count; i++)
            {
                var expected = digests[indexes[i]];
                var actual = i < stored.Count ? stored[i] : null;
                if (!string.Equals(actual, expected, StringComparison.OrdinalIgnoreCase))
                    return new Outcome(i, 0, new Failure(indexes[i], false, 0, actual, expected));
            }
        }
        var zeros = ZeroRanges(indexes, size, segmentSize);
        var zeroSegments = zeros.Sum(r => (r.Length + segmentSize - 1) / segmentSize);
        if (zeros.Count > 0 && await store.FindNonZeroAsync(relativePath, zeros, ct).ConfigureAwait(false) is [var first, ..])
            return new Outcome(indexes.Count, zeroSegments, new Failure(first / segmentSize, true, first, null, null));
        return new Outcome(indexes.Count, zeroSegments, null);
    }

    /// <summary>The byte ranges of the segments without a digest, runs of them joined into one range.</summary>
    internal static List<(long Offset, long Length)> ZeroRanges(IReadOnlyList<long> dataSegments, long size, long segmentSize)
    {
        var ranges = new List<(long Offset, long Length)>();
        var next = 0L; // the first byte not yet accounted for
        var count = (size + segmentSize - 1) / segmentSize;
        foreach (var index in dataSegments.Where(i => i >= 0 && i < count).Distinct().Order())
        {
            var start = index * segmentSize;
            if (start > next)
                ranges.Add((next, start - next));
            next = Math.Max(next, start + segmentSize);
        }
        if (next < size)
            ranges.Add((next, size - next));
        return ranges;
    }
}
