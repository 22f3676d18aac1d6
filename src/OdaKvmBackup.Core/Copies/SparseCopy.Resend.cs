namespace OdaKvmBackup.Core.Copies;

internal static partial class SparseCopy
{
    /// <summary>
    /// Writes the 16 MiB <paramref name="segments"/> of <paramref name="source"/> whole into
    /// <paramref name="destination"/>, then completes it again at <paramref name="size"/> (length, fsync), and returns
    /// the bytes written. For an incremental copy whose base turned out to have rotted in segments the copy had
    /// already passed (the base is read back while the copy runs): the source is still frozen, so what is written is
    /// what the copy would have written. Segments past <paramref name="size"/> (a base that was longer) are skipped.
    /// </summary>
    public static Task<long> ResendSegmentsAsync(string source, IStoreFileWriter destination, IReadOnlyCollection<long> segments, long size,
        CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(destination);
        ArgumentNullException.ThrowIfNull(segments);
        return RunOnOwnThread(() =>
        {
            using var input = File.OpenHandle(source, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            var buffer = GC.AllocateUninitializedArray<byte>(ChunkSize);
            long written = 0;
            foreach (var segment in segments.Where(s => s >= 0).Distinct().Order())
            {
                var end = Math.Min(size, (segment + 1) * SegmentSize);
                for (var offset = segment * SegmentSize; offset < end; offset += ChunkSize)
                {
                    ct.ThrowIfCancellationRequested();
                    var length = (int)Math.Min(ChunkSize, end - offset);
                    ReadFully(input, buffer.AsSpan(0, length), offset);
                    Wait(destination.WriteAsync(offset, buffer.AsMemory(0, length), ct));
                    written += length;
                }
            }
            destination.CompleteAsync(size, ct).GetAwaiter().GetResult();
            return written;
        });
    }
}
