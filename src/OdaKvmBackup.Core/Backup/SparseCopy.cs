using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Threading.Channels;
using Microsoft.Win32.SafeHandles;
using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Core.Backup;

/// <summary>Bytes and content digest of a copied image (see <see cref="VmDiskBackup.ContentDigest"/>); for a copy to
/// another host also <paramref name="SegmentDigests"/>: what that copy is checked against where it lies, the plain
/// SHA-256 (as sha256sum prints it) of every <see cref="SparseCopy.SegmentSize"/> segment of the file that holds a
/// non-zero byte, by segment number (segments of zeros only have none). A server with nothing but coreutils computes
/// them, and so can anyone: <c>dd if=FILE bs=16M skip=N count=1 | sha256sum</c>.</summary>
public sealed record CopyResult(long SizeBytes, long DataBytes, string ContentDigest, IReadOnlyDictionary<long, string>? SegmentDigests = null);

/// <summary>
/// Copies disk images keeping them sparse: it reads only the data extents (SEEK_DATA/SEEK_HOLE) and writes only
/// the 4 KiB blocks that are not all zeros, so a fully allocated raw vdisk becomes a sparse file the size of its
/// data. The digest covers (offset, block) for every non-zero block plus the size: it depends only on content, so
/// the source and its sparse copy give the same digest, which is how a copy is verified.
/// </summary>
public static partial class SparseCopy
{
    private const int ChunkSize = 4 << 20;
    private const int PipelineDepth = 4;
    private const int BlockSize = 4096;
    private const int SeekEnd = 2;
    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int FadviseDontNeed = 4;

    /// <summary>Segments of the plain digests a remote copy is verified with (see <see cref="CopyResult.SegmentDigests"/>).</summary>
    public const long SegmentSize = 16L << 20;

    /// <summary>Copies <paramref name="source"/> into <paramref name="destination"/> (holes and zero blocks are not
    /// written), completes it (size, fsync) and returns the content digest taken while reading, and the segment
    /// digests when <paramref name="segmentDigests"/>.</summary>
    public static Task<CopyResult> CopyAsync(string source, IStoreFileWriter destination, long bandwidthBytesPerSecond,
        Action<long, long>? progress, CancellationToken ct, bool segmentDigests = false) =>
        Task.Run(() => WalkAsync(source, destination, bandwidthBytesPerSecond, progress, ct, segmentDigests), ct);

    /// <summary>The content digest of a local file as stored: its pages are dropped from the cache first, so a
    /// verification reads what the storage holds, not what was just written to memory.</summary>
    public static Task<CopyResult> DigestAsync(string path, Action<long, long>? progress, CancellationToken ct) =>
        Task.Run(() =>
        {
            using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
                DropFromCache(handle);
            return WalkAsync(path, null, 0, progress, ct, segmentDigests: false);
        }, ct);

    /// <summary>Asks the kernel to forget a file's cached pages (clean ones go; dirty ones must be fsynced first).</summary>
    public static void DropFromCache(SafeFileHandle handle) => _ = PosixFadvise((int)handle.DangerousGetHandle(), 0, 0, FadviseDontNeed);

    /// <summary>The size of a file or a block device (whose Length is 0).</summary>
    public static long SizeOf(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return SizeOf(handle, path);
    }

    private static long SizeOf(SafeFileHandle handle, string path)
    {
        var size = LSeek((int)handle.DangerousGetHandle(), 0, SeekEnd);
        if (size < 0)
            throw new IOException($"Cannot read the size of '{path}' (errno {Marshal.GetLastPInvokeError()}).");
        return size;
    }

    private static async Task<CopyResult> WalkAsync(string source, IStoreFileWriter? output, long bandwidth, Action<long, long>? progress,
        CancellationToken ct, bool segmentDigests)
    {
        using var input = File.OpenHandle(source, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        // lseek(SEEK_END), not the file length: a block device (type='block' disk) has a length of 0.
        var size = SizeOf(input, source);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // Three stages on their own threads, a few chunks apart: reading, then finding and hashing the non-zero
        // blocks, then writing them. Each stage keeps a core busy while the others wait on the kernel, so the copy
        // runs at the pace of its slowest stage rather than of all three added up.
        var free = Channel.CreateBounded<byte[]>(PipelineDepth);
        for (var i = 0; i < PipelineDepth; i++)
            free.Writer.TryWrite(GC.AllocateUninitializedArray<byte>(ChunkSize, pinned: true));
        var read = Channel.CreateBounded<Chunk>(PipelineDepth);
        var scanned = Channel.CreateBounded<Chunk>(PipelineDepth);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var segments = segmentDigests ? new SegmentHasher(size) : null;
        long dataBytes = 0;

        var reader = Stage(read.Writer, stop, async () =>
        {
            long nextChunk = 0;
            foreach (var (start, end) in DataExtents(input, size))
            {
                for (var chunk = start - start % ChunkSize; chunk < end; chunk += ChunkSize)
                {
                    if (chunk < nextChunk)
                        continue; // this chunk straddled the previous extent and was done with it
                    var buffer = await free.Reader.ReadAsync(stop.Token).ConfigureAwait(false);
                    var length = (int)Math.Min(ChunkSize, size - chunk);
                    ReadFully(input, buffer.AsSpan(0, length), chunk);
                    nextChunk = chunk + ChunkSize;
                    await read.Writer.WriteAsync(new Chunk(chunk, length, buffer, new List<(int, int)>()), stop.Token).ConfigureAwait(false);
                }
            }
        });
        var scanner = Stage(scanned.Writer, stop, async () =>
        {
            await foreach (var chunk in read.Reader.ReadAllAsync(stop.Token).ConfigureAwait(false))
            {
                dataBytes += ScanChunk(chunk.Buffer.AsSpan(0, chunk.Length), chunk.Offset, hash, chunk.Runs);
                segments?.Add(chunk.Offset, chunk.Buffer.AsSpan(0, chunk.Length), chunk.Runs.Count > 0);
                await scanned.Writer.WriteAsync(chunk, stop.Token).ConfigureAwait(false);
            }
        });

        var clock = Stopwatch.StartNew();
        long readBytes = 0;
        try
        {
            await foreach (var chunk in scanned.Reader.ReadAllAsync(stop.Token).ConfigureAwait(false))
            {
                if (output is not null)
                {
                    foreach (var (runStart, runEnd) in chunk.Runs)
                        await output.WriteAsync(chunk.Offset + runStart, chunk.Buffer.AsMemory(runStart, runEnd - runStart), stop.Token).ConfigureAwait(false);
                }
                readBytes += chunk.Length;
                free.Writer.TryWrite(chunk.Buffer);
                progress?.Invoke(Math.Min(chunk.Offset + chunk.Length, size), size);
                Throttle(bandwidth, readBytes, clock, stop.Token);
            }
            await Task.WhenAll(reader, scanner).ConfigureAwait(false);
        }
        catch
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(reader, scanner).ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
            throw;
        }
        if (output is not null)
            await output.CompleteAsync(size, ct).ConfigureAwait(false);
        Span<byte> sizeBytes = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(sizeBytes, size);
        hash.AppendData(sizeBytes);
        progress?.Invoke(size, size);
        return new CopyResult(size, dataBytes, Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant(), segments?.Finish());
    }

    /// <summary>The plain SHA-256 of each segment that holds data. Zeros (all-zero chunks, and holes that were never
    /// read) are only hashed once a segment turns out to hold data, so a mostly empty disk costs little.</summary>
    private sealed class SegmentHasher(long size) : IDisposable
    {
        private static readonly byte[] Zeros = new byte[ChunkSize];
        private readonly SortedDictionary<long, string> _digests = new();
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private long _segment = -1;
        private long _position;      // bytes of the segment accounted for (hashed or pending)
        private long _pendingZeros;  // zeros accounted for but not hashed yet
        private bool _hasData;

        public void Add(long offset, ReadOnlySpan<byte> data, bool hasData)
        {
            var segment = offset / SegmentSize;
            if (segment != _segment)
            {
                Close();
                _segment = segment;
                _position = segment * SegmentSize;
                _pendingZeros = 0;
                _hasData = false;
            }
            _pendingZeros += offset - _position; // a hole before this chunk
            _position = offset + data.Length;
            if (!hasData)
            {
                _pendingZeros += data.Length;
                return;
            }
            FeedZeros();
            _hash.AppendData(data);
            _hasData = true;
        }

        public IReadOnlyDictionary<long, string> Finish()
        {
            Close();
            return _digests;
        }

        private void Close()
        {
            if (_segment < 0 || !_hasData)
                return;
            _pendingZeros += Math.Min(size, (_segment + 1) * SegmentSize) - _position;
            FeedZeros();
            _digests[_segment] = Convert.ToHexString(_hash.GetHashAndReset()).ToLowerInvariant();
            _hasData = false;
        }

        private void FeedZeros()
        {
            while (_pendingZeros > 0)
            {
                var n = (int)Math.Min(_pendingZeros, Zeros.Length);
                _hash.AppendData(Zeros, 0, n);
                _pendingZeros -= n;
            }
        }

        public void Dispose() => _hash.Dispose();
    }

    /// <summary>Runs one stage on its own thread; its output channel is completed when it ends, with its error if
    /// it failed (which also stops the other stages).</summary>
    private static Task Stage<T>(ChannelWriter<T> output, CancellationTokenSource stop, Func<Task> body) =>
        Task.Factory.StartNew(async () =>
        {
            try
            {
                await body().ConfigureAwait(false);
                output.TryComplete();
            }
            catch (Exception ex)
            {
                output.TryComplete(ex);
                await stop.CancelAsync().ConfigureAwait(false);
                throw;
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();

    /// <summary>A chunk of the source on its way through the stages, with its non-zero runs once scanned.</summary>
    private sealed record Chunk(long Offset, int Length, byte[] Buffer, List<(int Start, int End)> Runs);

    private static void ReadFully(SafeFileHandle input, Span<byte> data, long offset)
    {
        var read = 0;
        while (read < data.Length)
        {
            var n = RandomAccess.Read(input, data[read..], offset + read);
            if (n == 0)
                break;
            read += n;
        }
        data[read..].Clear(); // a file that shrank while read: what is gone reads as zeros, as a hole would
    }

    /// <summary>Hashes the non-zero 4 KiB blocks of a chunk and collects them as runs to write; returns their bytes.
    /// The hot loop of every copy: optimized at once, not after the tiered JIT has watched it for a while.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static long ScanChunk(ReadOnlySpan<byte> data, long chunkOffset, IncrementalHash hash, List<(int Start, int End)> runs)
    {
        runs.Clear();
        Span<byte> offsetBytes = stackalloc byte[8];
        long dataBytes = 0;
        var runStart = -1;
        for (var block = 0; block < data.Length; block += BlockSize)
        {
            var blockData = data.Slice(block, Math.Min(BlockSize, data.Length - block));
            if (!blockData.ContainsAnyExcept((byte)0))
            {
                if (runStart >= 0)
                    runs.Add((runStart, block));
                runStart = -1;
                continue;
            }
            BinaryPrimitives.WriteInt64LittleEndian(offsetBytes, chunkOffset + block);
            hash.AppendData(offsetBytes);
            hash.AppendData(blockData);
            dataBytes += blockData.Length;
            if (runStart < 0)
                runStart = block;
        }
        if (runStart >= 0)
            runs.Add((runStart, data.Length));
        return dataBytes;
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
