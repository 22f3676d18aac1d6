using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Copies;

/// <summary>How far a copy is: bytes of the source compared (read and digested), bytes written to the destination,
/// and the source's size.</summary>
internal readonly record struct CopyProgress(long Compared, long Sent, long Total);

/// <summary>
/// What a copy did (issue 15): the source's size, its data (bytes in non-zero 4 KiB blocks), the
/// <see cref="BlockDigestList"/> taken while reading it (what the copy is verified with, and the base of the next
/// incremental copy), the bytes read from the source, the bytes written to the destination, and of those the bytes
/// written only because their base segment had rotted. <paramref name="ContentDigest"/> (the digest of sets of
/// Format OdaKvmBackup/2, see <see cref="VmDiskBackup.ContentDigest"/>) only when asked for.
/// </summary>
internal sealed record CopyResult(long SizeBytes, long DataBytes, BlockDigestList Digests, long BytesRead, long BytesSent,
    long BytesResent, string? ContentDigest = null);

/// <summary>The content digest of a file (sets of Format OdaKvmBackup/2): its size, its data bytes and the digest.</summary>
internal sealed record ContentDigestResult(long SizeBytes, long DataBytes, string ContentDigest);

/// <summary>
/// Copies disk images: it reads only the data extents (SEEK_DATA/SEEK_HOLE), and digests every 64 KiB block and
/// 16 MiB segment as it reads (<see cref="BlockDigestList"/>; holes are zeros, digested without hashing). A full
/// copy writes only the 4 KiB blocks that are not all zeros, so a fully allocated raw vdisk becomes a sparse file the
/// size of its data. An incremental copy writes into a destination that holds the base's bytes already (a clone)
/// only the 64 KiB blocks whose digest differs from the base's, whole, zeros included, and every block of a segment
/// that rotted in the base.
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

    /// <summary>The segments a copy is verified by (see <see cref="BlockDigestList.SegmentSize"/>).</summary>
    public const long SegmentSize = BlockDigestList.SegmentSize;

    /// <summary>
    /// Copies <paramref name="source"/> into <paramref name="destination"/>, completes it (size, fsync) and returns
    /// what it did, with the digest list taken while reading. Without <paramref name="baseCopy"/> a full, sparse
    /// copy (zero 4 KiB blocks are not written); with one, <paramref name="destination"/> must hold the base's bytes
    /// already, and only the 64 KiB blocks that differ from them (or lie in a rotted segment) are written. A source
    /// whose size is not the base's is the caller's mistake (it copies in full then): <see cref="ArgumentException"/>.
    /// </summary>
    public static Task<CopyResult> CopyAsync(string source, IStoreFileWriter destination, CopyBase? baseCopy,
        long bandwidthBytesPerSecond, Action<CopyProgress>? progress, CancellationToken ct, bool legacyContentDigest = false)
    {
        ArgumentNullException.ThrowIfNull(destination);
        return RunOnOwnThread(() => Walk(source, destination, baseCopy, bandwidthBytesPerSecond, progress, ct, legacyContentDigest, digestList: true));
    }

    /// <summary>The content digest (Format OdaKvmBackup/2) of a local file as stored: its pages are dropped from the
    /// cache first, so a verification reads what the storage holds, not what was just written to memory.</summary>
    public static Task<ContentDigestResult> DigestAsync(string path, Action<long, long>? progress, CancellationToken ct) =>
        RunOnOwnThread(() =>
        {
            using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
                DropFromCache(handle);
            var result = Walk(path, null, null, 0, Progress(progress), ct, legacyContentDigest: true, digestList: false);
            return new ContentDigestResult(result.SizeBytes, result.DataBytes, result.ContentDigest!);
        });

    /// <summary>The block digest list of a local file as stored (issue 15): its pages are dropped from the cache
    /// first, so a verification reads what the storage holds. Its <see cref="BlockDigestList.Sha256"/> equals the
    /// manifest's <c>Digests</c> exactly when the file holds the bytes the list was taken of.</summary>
    public static Task<BlockDigestList> DigestListAsync(string path, Action<long, long>? progress, CancellationToken ct) =>
        RunOnOwnThread(() =>
        {
            using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
                DropFromCache(handle);
            return Walk(path, null, null, 0, Progress(progress), ct, legacyContentDigest: false, digestList: true).Digests;
        });

    private static Action<CopyProgress>? Progress(Action<long, long>? progress) =>
        progress is null ? null : p => progress(p.Compared, p.Total);

    /// <summary>A copy blocks on the disks for seconds or hours: it gets a thread of its own, not one of the pool's.</summary>
    private static Task<T> RunOnOwnThread<T>(Func<T> work) =>
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
    /// Two stages on threads of their own: this one reads, finds the non-zero 4 KiB blocks and (for a full copy)
    /// writes them, as cp does; the hasher digests what was read, a few chunks behind (the block digests on its
    /// thread, the segment digests on a third), and for an incremental copy writes the blocks that differ from the
    /// base: the digests cost no time as long as hashing keeps up with the disks. Both loops are plain synchronous
    /// code compiled fully optimized at once, so the first copy of a process (a nightly run) goes as fast as any other.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static CopyResult Walk(string source, IStoreFileWriter? output, CopyBase? baseCopy, long bandwidth,
        Action<CopyProgress>? progress, CancellationToken ct, bool legacyContentDigest, bool digestList)
    {
        using var input = File.OpenHandle(source, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        // lseek(SEEK_END), not the file length: a block device (type='block' disk) has a length of 0.
        var size = SizeOf(input, source);
        if (baseCopy is not null && baseCopy.List.FileSize != size)
        {
            throw new ArgumentException(
                $"'{source}' holds {size} bytes, its base {baseCopy.List.FileSize}: only a file of the base's size is copied incrementally.", nameof(baseCopy));
        }
        // A larger read-ahead: measured on the lab, reading and hashing a disk went from 0.85-1.5 s to 0.75-0.8 s
        // for 1 GiB of data, and from 1.1-2.0 s to 0.75-0.85 s on a raw file with its data in 32 extents.
        var fd = (int)input.DangerousGetHandle();
        _ = PosixFadvise(fd, 0, 0, FadviseSequential);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var free = new BlockingCollection<byte[]>(PipelineDepth);
        for (var i = 0; i < PipelineDepth; i++)
            free.Add(GC.AllocateUninitializedArray<byte>(ChunkSize, pinned: true));
        using var toHash = new BlockingCollection<Chunk>(PipelineDepth);
        using var hasher = new Hasher(size, digestList, legacyContentDigest, baseCopy, output, progress);
        var hashing = new Thread(() => hasher.Run(toHash, free, stop)) { IsBackground = true, Name = "OdaKvmBackup hasher" };
        hashing.Start();
        var clock = Stopwatch.StartNew();
        long nextChunk = 0, readBytes = 0, dataBytes = 0;
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
                    foreach (var (runStart, runEnd) in runs)
                        dataBytes += runEnd - runStart;
                    if (output is not null && baseCopy is null)
                    {
                        foreach (var (runStart, runEnd) in runs)
                        {
                            Wait(output.WriteAsync(chunk + runStart, buffer.AsMemory(runStart, runEnd - runStart), stop.Token));
                            hasher.AddSent(runEnd - runStart);
                        }
                    }
                    toHash.Add(new Chunk(chunk, length, buffer, runs), stop.Token);
                    readBytes += length;
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
            hasher.Failure?.Throw(); // the hasher's failure, not the cancellation it caused here
            throw;
        }
        ct.ThrowIfCancellationRequested();
        var result = hasher.Finish(readBytes, dataBytes, stop.Token);
        output?.CompleteAsync(size, ct).GetAwaiter().GetResult();
        progress?.Invoke(new CopyProgress(size, result.BytesSent, size));
        return result;
    }

    /// <summary>Waits for a write: a local one is done already; a remote one returns once its data is queued.</summary>
    private static void Wait(ValueTask write)
    {
        if (!write.IsCompletedSuccessfully)
            write.AsTask().GetAwaiter().GetResult();
    }

    /// <summary>The hashing stage: the digest list (and the content digest of Format OdaKvmBackup/2 when asked) of
    /// what the reading thread has read, in order; for an incremental copy it also writes the blocks that differ from
    /// the base, once their digests are known. Each buffer goes back to the reading thread once done with.</summary>
    private sealed class Hasher(long size, bool digestList, bool contentDigest, CopyBase? baseCopy, IStoreFileWriter? output,
        Action<CopyProgress>? progress) : IDisposable
    {
        private const int Batch = 32;
        private static readonly byte[] ZeroBlock = new byte[BlockDigestList.BlockSize];
        private readonly IncrementalHash? _hash = contentDigest ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        private readonly BlockDigestListBuilder? _builder = digestList ? new BlockDigestListBuilder(size) : null;
        // (offset, block) pairs gathered and hashed in one call: far fewer calls into the crypto library.
        private readonly byte[] _pairs = GC.AllocateUninitializedArray<byte>(Batch * (8 + BlockSize));
        private long _decided; // blocks whose write decision (incremental copy) is made
        private long _sent;
        private long _resent;

        public System.Runtime.ExceptionServices.ExceptionDispatchInfo? Failure { get; private set; }

        public void AddSent(long bytes) => Interlocked.Add(ref _sent, bytes);

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(BlockingCollection<Chunk> chunks, BlockingCollection<byte[]> free, CancellationTokenSource stop)
        {
            try
            {
                foreach (var chunk in chunks.GetConsumingEnumerable(stop.Token))
                {
                    var data = chunk.Buffer.AsSpan(0, chunk.Length);
                    if (_hash is not null)
                        HashRuns(data, chunk.Offset, _hash, chunk.Runs, _pairs);
                    if (_builder is not null)
                    {
                        _builder.Append(chunk.Offset, data);
                        if (baseCopy is not null)
                            WriteDiffering(_builder.CompletedBlocks, chunk, stop.Token);
                    }
                    free.Add(chunk.Buffer);
                    progress?.Invoke(new CopyProgress(chunk.Offset + chunk.Length, Volatile.Read(ref _sent), size));
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

        /// <summary>The list, and for an incremental copy the blocks after the last chunk (holes: zeros) written where
        /// they differ from the base.</summary>
        public CopyResult Finish(long readBytes, long dataBytes, CancellationToken ct)
        {
            BlockDigestList? list = null;
            if (_builder is not null)
            {
                list = _builder.Complete();
                if (baseCopy is not null)
                    WriteDiffering(list, list.BlockCount, null, ct);
            }
            string? digest = null;
            if (_hash is not null)
            {
                Span<byte> sizeBytes = stackalloc byte[8];
                BinaryPrimitives.WriteInt64LittleEndian(sizeBytes, size);
                _hash.AppendData(sizeBytes);
                digest = Convert.ToHexString(_hash.GetHashAndReset()).ToLowerInvariant();
            }
            return new CopyResult(size, dataBytes, list!, readBytes, Volatile.Read(ref _sent), _resent, digest);
        }

        public void Dispose()
        {
            _hash?.Dispose();
            _builder?.Dispose();
        }

        private void WriteDiffering(long completed, Chunk chunk, CancellationToken ct)
        {
            var digests = _builder!;
            while (_decided < completed)
            {
                var index = _decided;
                WriteIfDiffers(index, digests.BlockDigest(index), chunk, ct);
                _decided++;
            }
        }

        private void WriteDiffering(BlockDigestList list, long completed, Chunk? chunk, CancellationToken ct)
        {
            while (_decided < completed)
            {
                var index = _decided;
                WriteIfDiffers(index, list.BlockDigest(index), chunk, ct);
                _decided++;
            }
        }

        /// <summary>Writes block <paramref name="index"/> whole when its digest differs from the base's or its segment
        /// rotted: from the chunk when it lies there, else (a hole) as zeros.</summary>
        private void WriteIfDiffers(long index, ReadOnlySpan<byte> digest, Chunk? chunk, CancellationToken ct)
        {
            var differs = baseCopy!.List.BlockDiffers(index, digest);
            var rotted = baseCopy.RottedSegments.Count > 0 && baseCopy.RottedSegments.Contains(index / BlockDigestList.BlocksPerSegment);
            if (!differs && !rotted)
                return;
            var offset = index * BlockDigestList.BlockSize;
            var length = (int)Math.Min(BlockDigestList.BlockSize, size - offset);
            ReadOnlyMemory<byte> bytes = chunk is not null && offset >= chunk.Offset && offset + length <= chunk.Offset + chunk.Length
                ? chunk.Buffer.AsMemory((int)(offset - chunk.Offset), length)
                : ZeroBlock.AsMemory(0, length);
            Wait(output!.WriteAsync(offset, bytes, ct));
            Interlocked.Add(ref _sent, length);
            if (!differs)
                _resent += length;
        }
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
