using System.Buffers.Binary;
using System.Security.Cryptography;

namespace OdaKvmBackup.Core.Copies;

/// <summary>
/// Copies (or only digests) a stored file read through an <see cref="IStoreFileReader"/>, one chunk after the
/// other: for a copy on an SSH server, whose zeros must travel, since the server cannot say where its holes are.
/// Only non-zero 4 KiB blocks are written, so the result is sparse, and the digest list (and, when asked, the content
/// digest of Format OdaKvmBackup/2) is the same as <see cref="SparseCopy"/>'s: a copy read this way can be checked
/// against its manifest.
/// </summary>
internal static class StreamCopy
{
    private const int ChunkSize = 4 << 20;

    public static async Task<CopyResult> CopyAsync(IStoreFileReader reader, IStoreFileWriter? writer, Action<long, long>? progress, CancellationToken ct,
        bool legacyContentDigest = false)
    {
        var size = reader.Size;
        var buffer = new byte[ChunkSize];
        List<(int Start, int End)> runs;
        using var hash = legacyContentDigest ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        using var builder = new BlockDigestListBuilder(size);
        long dataBytes = 0, sent = 0;
        for (long offset = 0; offset < size; offset += ChunkSize)
        {
            ct.ThrowIfCancellationRequested();
            var length = (int)Math.Min(ChunkSize, size - offset);
            var read = 0;
            while (read < length)
            {
                var n = await reader.ReadAsync(offset + read, buffer.AsMemory(read, length - read), ct).ConfigureAwait(false);
                if (n == 0)
                    throw new IOException($"The stored file ended at {offset + read} bytes; its size is {size}.");
                read += n;
            }
            runs = SparseCopy.FindRuns(buffer.AsSpan(0, length));
            foreach (var (start, end) in runs)
                dataBytes += end - start;
            if (hash is not null)
                SparseCopy.HashRuns(buffer.AsSpan(0, length), offset, hash, runs);
            builder.Append(offset, buffer.AsSpan(0, length));
            if (writer is not null)
            {
                foreach (var (start, end) in runs)
                {
                    await writer.WriteAsync(offset + start, buffer.AsMemory(start, end - start), ct).ConfigureAwait(false);
                    sent += end - start;
                }
            }
            progress?.Invoke(offset + length, size);
        }
        if (writer is not null)
            await writer.CompleteAsync(size, ct).ConfigureAwait(false);
        string? digest = null;
        if (hash is not null)
        {
            var sizeBytes = new byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(sizeBytes, size);
            hash.AppendData(sizeBytes);
            digest = Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant();
        }
        progress?.Invoke(size, size);
        return new CopyResult(size, dataBytes, builder.Complete(), size, sent, 0, digest);
    }
}
