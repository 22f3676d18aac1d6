namespace OdaKvmBackup.Core.Copies;

/// <summary>
/// How a copy on another host is checked where it lies, after it is written (Copy-VmDisk), as the base of the next
/// copy (its rotted segments are sent again) and later (Test-KvmBackup): each segment that held data, by its SHA-256
/// computed on the server; each segment that held only zeros (it has no digest), by reading as zeros there, so a
/// server that put data into a hole is caught too. Only digests and offsets cross the network.
/// </summary>
internal static class RemoteCopyCheck
{
    /// <summary>What was checked, and the segments found to read differently: every one when all were asked for, else
    /// the first (none when the copy is good).</summary>
    public sealed record Outcome(int DataSegments, long ZeroSegments, IReadOnlyList<Failure> Differing)
    {
        /// <summary>The first segment found to differ; null when the copy reads as its digests say.</summary>
        public Failure? Failed => Differing.Count > 0 ? Differing[0] : null;
    }

    /// <summary>The segment that reads differently: one that should hold only zeros and holds data from byte
    /// <c>FirstData</c> on (<c>ZerosExpected</c>), or one whose digest on the server is <c>Digest</c>, not <c>Expected</c>.</summary>
    public sealed record Failure(long Segment, bool ZerosExpected, long FirstData, string? Digest, string? Expected);

    /// <summary>
    /// Reads the copy at <paramref name="relativePath"/> back where it lies against its block digest list: the
    /// segments that hold data by their SHA-256, the segments of 16 MiB of zeros by reading as zeros. With
    /// <paramref name="findAll"/> (a base, whose rotted segments are sent again) every segment that differs is found,
    /// at one more command per segment of zeros that holds data; without it (a verification, which one difference
    /// fails) the check stops at the first (a segment whose digest differs before one of zeros that holds data). <paramref name="progress"/> gets the bytes checked and the copy's size
    /// after each step. A read that fails throws (a <see cref="BackupException"/> or <see cref="IOException"/> naming why).
    /// </summary>
    public static Task<Outcome> RunAsync(IBackupStore store, string relativePath, BlockDigestList list, bool findAll,
        Action<long, long>? progress, CancellationToken ct) =>
        CheckAsync(store, relativePath, list.FileSize, BlockDigestList.SegmentSize, list.DataSegmentDigests(), findAll, progress, ct);

    /// <summary>As the other, for the segment digests of a manifest of format OdaKvmBackup/2 (their own segment size);
    /// stops at the first segment that differs.</summary>
    public static Task<Outcome> RunAsync(IBackupStore store, string relativePath, long size, long segmentSize,
        IReadOnlyDictionary<long, string> digests, CancellationToken ct) =>
        CheckAsync(store, relativePath, size, segmentSize, digests, findAll: false, null, ct);

    private static async Task<Outcome> CheckAsync(IBackupStore store, string relativePath, long size, long segmentSize,
        IReadOnlyDictionary<long, string> digests, bool findAll, Action<long, long>? progress, CancellationToken ct)
    {
        var differing = new List<Failure>();
        var indexes = digests.Keys.Order().ToList();
        var zeros = ZeroRanges(indexes, size, segmentSize);
        var zeroSegments = zeros.Sum(r => (r.Length + segmentSize - 1) / segmentSize);
        // Asked at once: each is a command on the server (a login: 0.3 s on the lab), and neither needs the other's answer.
        var digestsCall = indexes.Count > 0 ? store.SegmentDigestsAsync(relativePath, segmentSize, indexes, ct) : Task.FromResult<IReadOnlyList<string>>([]);
        var zerosCall = zeros.Count > 0 ? store.FindNonZeroAsync(relativePath, zeros, ct) : Task.FromResult<IReadOnlyList<long>>([]);
        await Task.WhenAll(digestsCall, zerosCall).ConfigureAwait(false);
        if (indexes.Count > 0)
        {
            var stored = digestsCall.Result;
            for (var i = 0; i < indexes.Count; i++)
            {
                var expected = digests[indexes[i]];
                var actual = i < stored.Count ? stored[i] : null;
                if (string.Equals(actual, expected, StringComparison.OrdinalIgnoreCase))
                    continue;
                differing.Add(new Failure(indexes[i], false, 0, actual, expected));
                if (!findAll)
                    return new Outcome(indexes.Count, 0, differing);
            }
            progress?.Invoke(Math.Min(indexes.Count * segmentSize, size), size);
        }
        // A range of zero segments that holds data somewhere: that segment differs; the rest of the range is asked again.
        var found = zerosCall.Result;
        while (zeros.Count > 0)
        {
            var again = new List<(long Offset, long Length)>();
            foreach (var first in found)
            {
                if (zeros.FirstOrDefault(r => first >= r.Offset && first < r.Offset + r.Length) is not { Length: > 0 } range)
                    throw new IOException($"the server named offset {first}, outside the ranges it was asked about");
                var segment = first / segmentSize;
                differing.Add(new Failure(segment, true, first, null, null));
                if (!findAll)
                    return new Outcome(indexes.Count, zeroSegments, differing);
                var next = (segment + 1) * segmentSize;
                if (next < range.Offset + range.Length)
                    again.Add((next, range.Offset + range.Length - next));
            }
            zeros = again;
            if (zeros.Count > 0)
                found = await store.FindNonZeroAsync(relativePath, zeros, ct).ConfigureAwait(false);
        }
        progress?.Invoke(size, size);
        return new Outcome(indexes.Count, zeroSegments, differing);
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
