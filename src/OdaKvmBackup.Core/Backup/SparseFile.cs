using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Backup;

/// <summary>Bytes and content digest of a copied image (see <see cref="VmDiskBackup.ContentDigest"/>).</summary>
public sealed record CopyResult(long SizeBytes, long DataBytes, string ContentDigest);

/// <summary>
/// Copies disk images keeping them sparse: it reads only the data extents (SEEK_DATA/SEEK_HOLE) and writes only
/// the 4 KiB blocks that are not all zeros, so a fully allocated raw vdisk becomes a sparse file the size of its
/// data. The digest covers (offset, block) for every non-zero block plus the size: it depends only on content, so
/// the source and its sparse copy give the same digest, which is how a copy is verified.
/// </summary>
public static partial class SparseFile
{
    private const int ChunkSize = 1 << 20;
    private const int BlockSize = 4096;
    private const int SeekEnd = 2;
    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int FadviseDontNeed = 4;

    public static Task<CopyResult> CopyAsync(string source, string destination, long bandwidthBytesPerSecond,
        Action<long, long>? progress, CancellationToken ct) =>
        Task.Run(() => Walk(source, destination, bandwidthBytesPerSecond, progress, ct), ct);

    /// <summary>The digest of a file as stored: its pages are dropped from the cache first, so a verification
    /// reads what the storage holds, not what was just written to memory.</summary>
    public static Task<CopyResult> DigestAsync(string path, Action<long, long>? progress, CancellationToken ct) =>
        Task.Run(() =>
        {
            using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
                _ = PosixFadvise((int)handle.DangerousGetHandle(), 0, 0, FadviseDontNeed);
            return Walk(path, null, 0, progress, ct);
        }, ct);

    private static CopyResult Walk(string source, string? destination, long bandwidth, Action<long, long>? progress, CancellationToken ct)
    {
        using var input = File.OpenHandle(source, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        // lseek(SEEK_END), not the file length: a block device (type='block' disk) has a length of 0.
        var size = LSeek((int)input.DangerousGetHandle(), 0, SeekEnd);
        if (size < 0)
            throw new IOException($"Cannot read the size of '{source}' (errno {Marshal.GetLastPInvokeError()}).");
        using var output = destination is null ? null : new FileStream(destination, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[ChunkSize];
        Span<byte> offsetBytes = stackalloc byte[8];
        long nextChunk = 0, dataBytes = 0, readBytes = 0;
        var clock = Stopwatch.StartNew();
        foreach (var (start, end) in DataExtents(input, size))
        {
            for (var chunk = start - start % ChunkSize; chunk < end; chunk += ChunkSize)
            {
                if (chunk < nextChunk)
                    continue; // this chunk straddled the previous extent and was done with it
                ct.ThrowIfCancellationRequested();
                var length = (int)Math.Min(ChunkSize, size - chunk);
                var data = buffer.AsSpan(0, length);
                var read = 0;
                while (read < length)
                {
                    var n = RandomAccess.Read(input, data[read..], chunk + read);
                    if (n == 0)
                        break;
                    read += n;
                }
                data[read..].Clear();
                nextChunk = chunk + ChunkSize;
                readBytes += length;
                // Non-zero blocks are hashed one by one and written as contiguous runs.
                var runStart = -1;
                for (var block = 0; block < length; block += BlockSize)
                {
                    var blockData = data.Slice(block, Math.Min(BlockSize, length - block));
                    if (blockData.IndexOfAnyExcept((byte)0) < 0)
                    {
                        WriteRun(output, data, chunk, ref runStart, block);
                        continue;
                    }
                    BinaryPrimitives.WriteInt64LittleEndian(offsetBytes, chunk + block);
                    hash.AppendData(offsetBytes);
                    hash.AppendData(blockData);
                    dataBytes += blockData.Length;
                    if (runStart < 0)
                        runStart = block;
                }
                WriteRun(output, data, chunk, ref runStart, length);
                progress?.Invoke(Math.Min(nextChunk, size), size);
                Throttle(bandwidth, readBytes, clock, ct);
            }
        }
        if (output is not null)
        {
            output.SetLength(size);
            output.Flush(flushToDisk: true);
            _ = PosixFadvise((int)output.SafeFileHandle.DangerousGetHandle(), 0, 0, FadviseDontNeed);
        }
        BinaryPrimitives.WriteInt64LittleEndian(offsetBytes, size);
        hash.AppendData(offsetBytes);
        progress?.Invoke(size, size);
        return new CopyResult(size, dataBytes, Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant());
    }

    /// <summary>Writes the pending run of non-zero blocks [runStart, end) of the chunk, if there is one.</summary>
    private static void WriteRun(FileStream? output, ReadOnlySpan<byte> data, long chunk, ref int runStart, int end)
    {
        if (runStart >= 0 && output is not null)
            RandomAccess.Write(output.SafeFileHandle, data[runStart..end], chunk + runStart);
        runStart = -1;
    }

    private static void Throttle(long bandwidth, long bytes, Stopwatch clock, CancellationToken ct)
    {
        if (bandwidth <= 0)
            return;
        var due = TimeSpan.FromSeconds((double)bytes / bandwidth) - clock.Elapsed;
        if (due > TimeSpan.Zero)
            ct.WaitHandle.WaitOne(due);
        ct.ThrowIfCancellationRequested();
    }

    /// <summary>The [start, end) ranges that hold data; the whole file where the file system cannot tell.</summary>
    private static IEnumerable<(long Start, long End)> DataExtents(SafeFileHandle handle, long size)
    {
        var fd = (int)handle.DangerousGetHandle();
        long position = 0;
        while (position < size)
        {
            var data = LSeek(fd, position, SeekData);
            if (data < 0)
            {
                if (Marshal.GetLastPInvokeError() == 6 /* ENXIO: no data after position */)
                    yield break;
                yield return (position, size); // SEEK_DATA unsupported: read everything
                yield break;
            }
            var hole = LSeek(fd, data, SeekHole);
            if (hole < 0 || hole > size)
                hole = size;
            yield return (data, hole);
            position = hole;
        }
    }

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(int fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int PosixFadvise(int fd, long offset, long length, int advice);
}
