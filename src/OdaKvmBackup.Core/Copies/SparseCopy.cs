using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Copies;

/// <summary>Bytes and content digest of a copied image (see <see cref="VmDiskBackup.ContentDigest"/>); for a copy to
/// another host also <paramref name="SegmentDigests"/>: what that copy is checked against where it lies, the plain
/// SHA-256 (as sha256sum prints it) of every <see cref="SparseCopy.SegmentSize"/> segment of the file that holds a
/// non-zero byte, by segment number (segments of zeros only have none). A server with nothing but coreutils computes
/// them, and so can anyone: <c>dd if=FILE bs=16M skip=N count=1 | sha256sum</c>.</summary>
internal sealed record CopyResult(long SizeBytes, long DataBytes, string ContentDigest, IReadOnlyDictionary<long, string>? SegmentDigests = null);

/// <summary>
/// Copies disk images keeping them sparse: it reads only the data extents (SEEK_DATA/SEEK_HOLE) and writes only
/// the 4 KiB blocks that are not all zeros, so a fully allocated raw vdisk becomes a sparse file the size of its
/// data. The digest covers (offset, block) for every non-zero block plus the size: it depends only on content, so
/// the source and its sparse copy give the same digest, which is how a copy is verified.
/// </summary>
internal static partial class SparseCopy
{
    private const int ChunkSize = 1 << 20;
    private const int PipelineDepth = 16;
    private const int BlockSize = 4096;
    private const int SeekEnd = 2;
    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int FadviseSequential = 2;
    private const int FadviseWillNeed = 3;
    private const int FadviseDontNeed = 4;
    // Reads 128 KiB at a time (small page-cache folios, as cp reads), the kernel asked to fetch 16 MiB ahead.
    private const int ReadSize = 128 << 10;
    private const long ReadAhead = 16L << 20;

    /// <summary>Segments of the plain digests a remote copy is verified with (see <see cref="CopyResult.SegmentDigests"/>).</summary>
    public const long SegmentSize = 16L << 20;

    /// <summary>Copies <paramref name="source"/> into <paramref name="destination"/> (holes and zero blocks are not
    /// written), completes it (size, fsync) and returns the content digest taken while reading, and the segment
    /// digests when <paramref name="segmentDigests"/>.</summary>
    public static Task<CopyResult> CopyAsync(string source, IStoreFileWriter destination, long bandwidthBytesPerSecond,
        Action<long, long>? progress, CancellationToken ct, bool segmentDigests = false) =>
        RunOnOwnThread(() => Walk(source, destination, bandwidthBytesPerSecond, progress, ct, segmentDigests));

    /// <summary>The content digest of a local file as stored: its pages are dropped from the cache first, so a
    /// verification reads what the storage holds, not what was just written to memory.</summary>
    public static Task<CopyResult> DigestAsync(string path, Action<long, long>? progress, CancellationToken ct) =>
        RunOnOwnThread(() =>
        {
            using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
                DropFromCache(handle);
            return Walk(path, null, 0, progress, ct, segmentDigests: false);
        });

    /// <summary>The block digest list of a local file as stored (issue 15): its pages are dropped from the cache
    /// first, so a verification reads what the storage holds. Its <see cref="BlockDigestList.Sha256"/> equals the
    /// manifest's <c>Digests</c> exactly when the file holds the bytes the list was taken of.</summary>
    public static Task<BlockDigestList> DigestListAsync(string path, Action<long, long>? progress, CancellationToken ct) =>
        Task.Factory.StartNew(() =>
        {
            using var input = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            DropFromCache(input);
            var size = SizeOf(input, path);
            var fd = (int)input.DangerousGetHandle();
            _ = PosixFadvise(fd, 0, 0, FadviseSequential);
            using var builder = new BlockDigestListBuilder(size);
            var buffer = GC.AllocateUninitializedArray<byte>(ChunkSize, pinned: true);
            foreach (var (start, end) in DataExtents(input, size))
            {
                for (var offset = start; offset < end; offset += ChunkSize)
                {
                    ct.ThrowIfCancellationRequested();
                    var length = (int)Math.Min(ChunkSize, end - offset);
                    ReadFully(input, buffer.AsSpan(0, length), offset);
                    builder.Append(offset, buffer.AsSpan(0, length));
                    progress?.Invoke(offset + length, size);
                }
            }
            return builder.Complete();
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>A copy blocks on the disks for seconds or hours: it gets a thread of its own, not one of the pool's.</summary>
    private static Task<CopyResult> RunOnOwnThread(Func<CopyResult> work) =>
        Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

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

    /// <summary>
    /// Two threads, each on a core of its own: this one reads, finds the non-zero blocks and writes them, as cp
    /// does; the other hashes what was read, a few chunks behind, so the digest costs no time as long as hashing
    /// keeps up with the disks. Small chunks stay in the CPU's cache between reading and hashing. Both loops are
    /// plain synchronous code compiled fully optimized at once, so the first copy of a process (a nightly run)
    /// goes as fast as any other.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static CopyResult Walk(string source, IStoreFileWriter? output, long bandwidth, Action<long, long>? progress,
        CancellationToken ct, bool segmentDigests)
    {
        using var input = File.OpenHandle(source, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        // lseek(SEEK_END), not the file length: a block device (type='block' disk) has a length of 0.
        var size = SizeOf(input, source);
        // A larger read-ahead: measured on the lab, reading and hashing a disk went from 0.85-1.5 s to 0.75-0.8 s
        // for 1 GiB of data, and from 1.1-2.0 s to 0.75-0.85 s on a raw file with its data in 32 extents.
        var fd = (int)input.DangerousGetHandle();
        _ = PosixFadvise(fd, 0, 0, FadviseSequential);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var free = new BlockingCollection<byte[]>(PipelineDepth);
        for (var i = 0; i < PipelineDepth; i++)
            free.Add(GC.AllocateUninitializedArray<byte>(ChunkSize, pinned: true));
        using var toHash = new BlockingCollection<Chunk>(PipelineDepth);
        var hasher = new Hasher(size, segmentDigests);
        var hashing = new Thread(() => hasher.Run(toHash, free, stop)) { IsBackground = true, Name = "OdaKvmBackup hasher" };
        hashing.Start();
        var clock = Stopwatch.StartNew();
        long nextChunk = 0, readBytes = 0;
        try
        {
            foreach (var (start, end) in DataExtents(input, size))
            {
                for (var chunk = start - start % ChunkSize; chunk < end; chunk += ChunkSize)
                {
                    if (chunk < nextChunk)
                        continue; // this chunk straddled the previous extent and was done with it
                    var buffer = free.Take(stop.Token);
                    var length = (int)Math.Min(ChunkSize, size - chunk);
                    // The kernel reads the extent a few chunks ahead while this thread writes: reading and
                    // writing then overlap, as one thread doing both in turn cannot. Never past the extent's end,
                    // where it would fill a hole's page cache with zeros that SEEK_DATA then reports as data.
                    if (chunk + ReadAhead < end)
                        _ = PosixFadvise(fd, chunk + ReadAhead, Math.Min(ChunkSize, end - chunk - ReadAhead), FadviseWillNeed);
                    ReadFully(input, buffer.AsSpan(0, length), chunk);
                    nextChunk = chunk + ChunkSize;
                    var runs = FindRuns(buffer.AsSpan(0, length));
                    if (output is not null)
                    {
                        foreach (var (runStart, runEnd) in runs)
                            Wait(output.WriteAsync(chunk + runStart, buffer.AsMemory(runStart, runEnd - runStart), stop.Token));
                    }
                    toHash.Add(new Chunk(chunk, length, buffer, runs), stop.Token);
                    readBytes += length;
                    progress?.Invoke(Math.Min(nextChunk, size), size);
                    Throttle(bandwidth, readBytes, clock, stop.Token);
                }
            }
            toHash.CompleteAdding();
            hashing.Join();
            hasher.Failure?.Throw();
        }
        catch
        {
            toHash.CompleteAdding();
            stop.Cancel();
            hashing.Join();
            throw;
        }
        ct.ThrowIfCancellationRequested();
        output?.CompleteAsync(size, ct).GetAwaiter().GetResult();
        progress?.Invoke(size, size);
        return hasher.Result(size);
    }

    /// <summary>Waits for a write: a local one is done already; a remote one returns once its data is queued.</summary>
    private static void Wait(ValueTask write)
    {
        if (!write.IsCompletedSuccessfully)
            write.AsTask().GetAwaiter().GetResult();
    }

    /// <summary>The hashing thread: the content digest (and the segment digests of a remote copy) of what the
    /// copying thread has read, in order; each buffer goes back to the copying thread once hashed.</summary>
    private sealed class Hasher(long size, bool segmentDigests)
    {
        private const int Batch = 32;
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private readonly SegmentHasher? _segments = segmentDigests ? new SegmentHasher(size) : null;
        // (offset, block) pairs gathered and hashed in one call: far fewer calls into the crypto library.
        private readonly byte[] _pairs = GC.AllocateUninitializedArray<byte>(Batch * (8 + BlockSize));
        private long _dataBytes;

        public System.Runtime.ExceptionServices.ExceptionDispatchInfo? Failure { get; private set; }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(BlockingCollection<Chunk> chunks, BlockingCollection<byte[]> free, CancellationTokenSource stop)
        {
            try
            {
                foreach (var chunk in chunks.GetConsumingEnumerable(stop.Token))
                {
                    _dataBytes += HashRuns(chunk.Buffer.AsSpan(0, chunk.Length), chunk.Offset, _hash, chunk.Runs, _pairs);
                    _segments?.Add(chunk.Offset, chunk.Buffer.AsSpan(0, chunk.Length), chunk.Runs.Count > 0);
                    free.Add(chunk.Buffer);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
            }
            catch (Exception ex)
            {
                Failure = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(ex);
                stop.Cancel();
            }
        }

        public CopyResult Result(long fileSize)
        {
            Span<byte> sizeBytes = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(sizeBytes, fileSize);
            _hash.AppendData(sizeBytes);
            var digest = Convert.ToHexString(_hash.GetHashAndReset()).ToLowerInvariant();
            var segments = _segments?.Finish();
            _hash.Dispose();
            _segments?.Dispose();
            return new CopyResult(fileSize, _dataBytes, digest, segments);
        }
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

    /// <summary>A chunk of the source on its way to the hasher, with its runs of non-zero 4 KiB blocks.</summary>
    private sealed record Chunk(long Offset, int Length, byte[] Buffer, List<(int Start, int End)> Runs);

    private static void ReadFully(SafeFileHandle input, Span<byte> data, long offset)
    {
        var read = 0;
        while (read < data.Length)
        {
            var n = RandomAccess.Read(input, data.Slice(read, Math.Min(ReadSize, data.Length - read)), offset + read);
            if (n == 0)
                break;
            read += n;
        }
        data[read..].Clear(); // a file that shrank while read: what is gone reads as zeros, as a hole would
    }

    /// <summary>The runs of 4 KiB blocks of a chunk that hold a non-zero byte: what is written, and hashed.
    /// The hot loop of every copy: optimized at once, not after the tiered JIT has watched it for a while.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static List<(int Start, int End)> FindRuns(ReadOnlySpan<byte> data)
    {
        var runs = new List<(int Start, int End)>();
        var runStart = -1;
        for (var block = 0; block < data.Length; block += BlockSize)
        {
            if (!IsAllZero(data.Slice(block, Math.Min(BlockSize, data.Length - block))))
            {
                if (runStart < 0)
                    runStart = block;
            }
            else if (runStart >= 0)
            {
                runs.Add((runStart, block));
                runStart = -1;
            }
        }
        if (runStart >= 0)
            runs.Add((runStart, data.Length));
        return runs;
    }

    /// <summary>True when every byte is 0. Written here with vectors, rather than calling the library's search, so
    /// that the first copy of a process runs it at full speed too: a fully allocated vdisk is mostly zeros, and this
    /// is where a copy of one spends its time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static bool IsAllZero(ReadOnlySpan<byte> block)
    {
        var vectors = MemoryMarshal.Cast<byte, Vector256<byte>>(block);
        var any = Vector256<byte>.Zero;
        foreach (var v in vectors)
            any |= v;
        if (any != Vector256<byte>.Zero)
            return false;
        foreach (var b in block[(vectors.Length * Vector256<byte>.Count)..])
        {
            if (b != 0)
                return false;
        }
        return true;
    }

    /// <summary>Adds each non-zero block of the runs to the content digest (its offset, then its bytes); returns
    /// their bytes. The pairs are gathered in <paramref name="pairs"/> and hashed a batch at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static long HashRuns(ReadOnlySpan<byte> data, long chunkOffset, IncrementalHash hash, List<(int Start, int End)> runs, byte[]? pairs = null)
    {
        pairs ??= new byte[8 + BlockSize];
        var filled = 0;
        long dataBytes = 0;
        foreach (var (start, end) in runs)
        {
            for (var block = start; block < end; block += BlockSize)
            {
                var blockData = data.Slice(block, Math.Min(BlockSize, end - block));
                if (filled + 8 + blockData.Length > pairs.Length)
                {
                    hash.AppendData(pairs, 0, filled);
                    filled = 0;
                }
                BinaryPrimitives.WriteInt64LittleEndian(pairs.AsSpan(filled, 8), chunkOffset + block);
                blockData.CopyTo(pairs.AsSpan(filled + 8));
                filled += 8 + blockData.Length;
                dataBytes += blockData.Length;
            }
        }
        if (filled > 0)
            hash.AppendData(pairs, 0, filled);
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
