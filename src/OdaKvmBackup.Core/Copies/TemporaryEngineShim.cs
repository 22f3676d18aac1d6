namespace OdaKvmBackup.Core.Copies;

// TEMPORARY (h15-copy): stands in for h15-engine's SparseCopy.CopyAsync(source, writer, CopyBase?, ...) of BRIEF15
// until it lands on main; this file is deleted at that merge (EngineResult -> CopyResult, EngineShim -> SparseCopy).
// A plain loop over the whole file: correct, not fast.

/// <summary>TEMPORARY: the engine's progress (BRIEF15).</summary>
internal readonly record struct CopyProgress(long Compared, long Sent, long Total);

/// <summary>TEMPORARY: the engine's CopyResult (BRIEF15).</summary>
internal sealed record EngineResult(long SizeBytes, long DataBytes, BlockDigestList Digests, long BytesRead, long BytesSent,
    long BytesResent, string? ContentDigest = null);

/// <summary>TEMPORARY: the engine's CopyAsync (BRIEF15).</summary>
internal static class EngineShim
{
    public static Task<EngineResult> CopyAsync(string source, IStoreFileWriter destination, CopyBase? baseCopy,
        long bandwidthBytesPerSecond, Action<CopyProgress>? progress, CancellationToken ct) =>
        Task.Factory.StartNew(() =>
        {
            _ = bandwidthBytesPerSecond;
            var size = SparseCopy.SizeOf(source);
            using var input = File.OpenHandle(source, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var builder = new BlockDigestListBuilder(size, twoThreads: false);
            var buffer = new byte[1 << 20];
            long read = 0, sent = 0, resent = 0, data = 0;
            for (long offset = 0; offset < size; offset += buffer.Length)
            {
                ct.ThrowIfCancellationRequested();
                var length = (int)Math.Min(buffer.Length, size - offset);
                var got = 0;
                while (got < length)
                {
                    var n = RandomAccess.Read(input, buffer.AsSpan(got, length - got), offset + got);
                    if (n == 0)
                        break;
                    got += n;
                }
                buffer.AsSpan(got, length - got).Clear();
                var chunk = buffer.AsMemory(0, length);
                builder.Append(offset, chunk.Span);
                read += length;
                var runs = SparseCopy.FindRuns(chunk.Span);
                data += runs.Sum(r => (long)(r.End - r.Start));
                if (baseCopy is null)
                {
                    foreach (var (start, end) in runs)
                    {
                        destination.WriteAsync(offset + start, chunk[start..end], ct).AsTask().GetAwaiter().GetResult();
                        sent += end - start;
                    }
                }
                else
                {
                    for (var block = 0; block < length; block += BlockDigestList.BlockSize)
                    {
                        var index = (offset + block) / BlockDigestList.BlockSize;
                        var blockLength = Math.Min(BlockDigestList.BlockSize, length - block);
                        var differs = index >= builder.CompletedBlocks || baseCopy.List.BlockDiffers(index, builder.BlockDigest(index));
                        var rotted = baseCopy.RottedSegments.Contains(index / BlockDigestList.BlocksPerSegment);
                        if (!differs && !rotted)
                            continue;
                        destination.WriteAsync(offset + block, chunk.Slice(block, blockLength), ct).AsTask().GetAwaiter().GetResult();
                        sent += blockLength;
                        if (!differs)
                            resent += blockLength;
                    }
                }
                progress?.Invoke(new CopyProgress(offset + length, sent, size));
            }
            destination.CompleteAsync(size, ct).GetAwaiter().GetResult();
            return new EngineResult(size, data, builder.Complete(), read, sent, resent);
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
}
