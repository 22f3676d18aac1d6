using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
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
    long BytesResent, string? ContentDigest = null)
{
    /// <summary>Whether the whole source was read with O_DIRECT (past the page cache); false where the file system
    /// refused it and the copy read through the cache instead.</summary>
    public bool SourceReadDirectly { get; init; }
}

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
    // Two segments' worth and a bit: one digest thread finishes a segment while the other starts on the next.
    private const int PipelineDepth = 40;
    private const int BlockSize = 4096;
    private const int SeekEnd = 2;
    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int FadviseSequential = 2;
    private const int FadviseWillNeed = 3;
    private const int FadviseDontNeed = 4;
    // Where the source cannot be read with O_DIRECT (see SourceFile): reads 128 KiB at a time (small page-cache
    // folios, as cp reads), the kernel asked to fetch 16 MiB ahead.
    private const int ReadSize = 128 << 10;
    private const long BufferedReadAhead = 16L << 20;

    /// <summary>The segments a copy is verified by (see <see cref="BlockDigestList.SegmentSize"/>).</summary>
    public const long SegmentSize = BlockDigestList.SegmentSize;

    /// <summary>
    /// Copies <paramref name="source"/> into <paramref name="destination"/>, completes it (size, fsync) and returns
    /// what it did, with the digest list taken while reading. Without <paramref name="baseCopy"/> a full, sparse
    /// copy (zero 4 KiB blocks are not written); with one, <paramref name="destination"/> must hold the base's bytes
    /// already, and only the 64 KiB blocks that differ from them (or lie in a rotted segment) are written; a source of
    /// another size than the base is compared up to the shorter end (see <see cref="BlockDiffers"/>).
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
    /// This thread takes the chunks a <see cref="ReadAhead"/> thread read, finds their non-zero 4 KiB blocks and (for a
    /// full copy) writes them, as cp does. The digests
    /// are taken by <see cref="DigestWorkers"/> threads, a segment at a time (its 64 KiB blocks and its SHA-256):
    /// segments are independent, so two threads share the work evenly whatever the disk's layout, a few chunks behind
    /// the reading, and cost no time as long as hashing keeps up with the disks. For an incremental copy the worker
    /// that digested a block writes it when it differs from the base. A chunk of zeros only is digested by nobody:
    /// its blocks and segments get the constant digests of zeros. The content digest of Format OdaKvmBackup/2, when
    /// asked for, is one sequential SHA-256 over the whole file: a stage of its own. The loops are plain synchronous
    /// code compiled fully optimized at once, so the first copy of a process (a nightly run) goes as fast as any other.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static CopyResult Walk(string source, IStoreFileWriter? output, CopyBase? baseCopy, long bandwidth,
        Action<CopyProgress>? progress, CancellationToken ct, bool legacyContentDigest, bool digestList)
    {
        using var input = SourceFile.Open(source);
        // lseek(SEEK_END), not the file length: a block device (type='block' disk) has a length of 0.
        var size = SizeOf(input.Handle, source);
        if (baseCopy is not null && (!digestList || output is null))
            throw new ArgumentException("An incremental copy needs a destination and the digest list.", nameof(baseCopy));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var free = new BlockingCollection<ChunkBuffer>(PipelineDepth + ReadAheadChunks + RequestChunks);
        for (var i = 0; i < PipelineDepth + ReadAheadChunks + RequestChunks; i++)
            free.Add(new ChunkBuffer());
        var sent = new SentCounter();
        using var digests = digestList ? new DigestWorkers(size, baseCopy, output, sent, free, stop) : null;
        using var content = legacyContentDigest ? new ContentStage(size, free, stop) : null;
        using var reads = new ReadAhead(input, size, free, stop);
        digests?.Start();
        content?.Start();
        reads.Start();
        var clock = Stopwatch.StartNew();
        long readBytes = 0, dataBytes = 0;
        try
        {
            foreach (var (chunk, length, buffer) in reads.Chunks(stop.Token))
            {
                var runs = FindRuns(buffer.Span[..length]);
                foreach (var (runStart, runEnd) in runs)
                    dataBytes += runEnd - runStart;
                if (output is not null && baseCopy is null)
                {
                    foreach (var (runStart, runEnd) in runs)
                    {
                        Wait(output.WriteAsync(chunk + runStart, buffer.Memory.Slice(runStart, runEnd - runStart), stop.Token));
                        sent.Add(runEnd - runStart);
                    }
                }
                var users = runs.Count == 0 ? 0 : (digests is null ? 0 : 1) + (content is null ? 0 : 1);
                if (users == 0)
                {
                    free.Add(buffer); // zeros only: nothing to digest
                }
                else
                {
                    var work = new Chunk(chunk, length, buffer, runs, users);
                    digests?.Add(work);
                    content?.Add(work);
                }
                readBytes += length;
                progress?.Invoke(new CopyProgress(Math.Min(chunk + ChunkSize, size), sent.Bytes, size));
                Throttle(bandwidth, readBytes, clock, stop.Token);
            }
            reads.Finish();
            digests?.Finish();
            content?.Finish();
        }
        catch
        {
            stop.Cancel();
            reads.Finish(); // a read's failure is the cause, not the cancellation it caused here
            digests?.Finish(); // a worker's failure is the cause, not the cancellation it caused here
            content?.Finish();
            throw;
        }
        ct.ThrowIfCancellationRequested();
        var list = digests?.Complete(stop.Token);
        var contentDigest = content?.Result();
        output?.CompleteAsync(size, ct).GetAwaiter().GetResult();
        progress?.Invoke(new CopyProgress(size, sent.Bytes, size));
        return new CopyResult(size, dataBytes, list!, readBytes, sent.Bytes, digests?.ResentBytes ?? 0, contentDigest)
        {
            SourceReadDirectly = input.ReadsDirectly,
        };
    }

    /// <summary>Waits for a write: a local one is done already; a remote one returns once its data is queued.</summary>
    private static void Wait(ValueTask write)
    {
        if (!write.IsCompletedSuccessfully)
            write.AsTask().GetAwaiter().GetResult();
    }

    /// <summary>Bytes written to the destination, by whichever thread wrote them.</summary>
    private sealed class SentCounter
    {
        private long _bytes;

        public long Bytes => Volatile.Read(ref _bytes);

        public void Add(long bytes) => Interlocked.Add(ref _bytes, bytes);
    }

    /// <summary>Threads that take work in order; the first failure stops the copy and is thrown by
    /// <see cref="Finish"/>, on the reading thread.</summary>
    private abstract class Workers : IDisposable
    {
        private readonly Thread[] _threads;
        private readonly CancellationTokenSource _stop;
        private System.Runtime.ExceptionServices.ExceptionDispatchInfo? _failure;
        private bool _started;
        private bool _finished;

        protected Workers(string name, int count, BlockingCollection<ChunkBuffer> free, CancellationTokenSource stop)
        {
            Free = free;
            _stop = stop;
            _threads = Enumerable.Range(0, count).Select(_ => new Thread(Run) { IsBackground = true, Name = name }).ToArray();
        }

        protected BlockingCollection<ChunkBuffer> Free { get; }

        /// <summary>Started once constructed whole (a derived class's fields are set only after this constructor).</summary>
        public void Start()
        {
            foreach (var thread in _threads)
                thread.Start();
            _started = true;
        }

        /// <summary>No more work: waits for the threads to be done with what they have, and throws their failure.</summary>
        public void Finish()
        {
            if (!_finished)
            {
                _finished = true;
                CompleteAdding();
                if (_started)
                {
                    foreach (var thread in _threads)
                        thread.Join();
                }
            }
            _failure?.Throw();
        }

        public virtual void Dispose()
        {
            if (!_finished)
            {
                _stop.Cancel();
                _finished = true;
                CompleteAdding();
                if (_started)
                {
                    foreach (var thread in _threads)
                        thread.Join();
                }
            }
        }

        protected abstract void CompleteAdding();

        /// <summary>One thread's loop: takes work until there is no more.</summary>
        protected abstract void Work(CancellationToken ct);

        private void Run()
        {
            try
            {
                Work(_stop.Token);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
            }
            catch (Exception ex)
            {
                lock (_threads)
                    _failure ??= System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(ex);
                _stop.Cancel();
            }
        }
    }

    /// <summary>The content digest of Format OdaKvmBackup/2: (offset, block) of every non-zero 4 KiB block, in order,
    /// then the size; one thread.</summary>
    private sealed class ContentStage(long size, BlockingCollection<ChunkBuffer> free, CancellationTokenSource stop)
        : Workers("OdaKvmBackup content digest", 1, free, stop)
    {
        private const int Batch = 32;
        private readonly BlockingCollection<Chunk> _chunks = new(PipelineDepth);
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        // (offset, block) pairs gathered and hashed in one call: far fewer calls into the crypto library.
        private readonly byte[] _pairs = GC.AllocateUninitializedArray<byte>(Batch * (8 + BlockSize));

        public void Add(Chunk chunk) => _chunks.Add(chunk);

        public string Result()
        {
            Span<byte> sizeBytes = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(sizeBytes, size);
            _hash.AppendData(sizeBytes);
            return Convert.ToHexString(_hash.GetHashAndReset()).ToLowerInvariant();
        }

        public override void Dispose()
        {
            base.Dispose();
            _chunks.Dispose();
            _hash.Dispose();
        }

        protected override void CompleteAdding() => _chunks.CompleteAdding();

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        protected override void Work(CancellationToken ct)
        {
            foreach (var chunk in _chunks.GetConsumingEnumerable(ct))
            {
                HashRuns(chunk.Buffer.Span[..chunk.Length], chunk.Offset, _hash, chunk.Runs, _pairs);
                chunk.Release(Free);
            }
        }
    }

    /// <summary>
    /// The digest list, a segment at a time: the chunks of a segment that hold data go, in order, to whichever of the
    /// threads takes that segment, which digests its blocks and the segment itself (a <see cref="BlockDigestListBuilder"/>
    /// of the segment) and puts them into the list. Segments that hold no data keep the digests of zeros the list
    /// starts with. For an incremental copy, the thread that digested a block writes it whole when its digest differs
    /// from the base's or its segment rotted; the blocks of segments that hold no data are decided at the end.
    /// </summary>
    private sealed class DigestWorkers : Workers
    {
        private static readonly byte[] ZeroBlock = new byte[BlockDigestList.BlockSize];
        private readonly long _size;
        private readonly CopyBase? _base;
        private readonly IStoreFileWriter? _output;
        private readonly SentCounter _sent;
        private readonly byte[] _list;
        private readonly bool[] _digested; // per segment: digested by a worker (it held data)
        private readonly BlockingCollection<SegmentWork> _segments = new();
        private SegmentWork? _current;
        private long _resent;

        public DigestWorkers(long size, CopyBase? baseCopy, IStoreFileWriter? output, SentCounter sent, BlockingCollection<ChunkBuffer> free,
            CancellationTokenSource stop)
            : base("OdaKvmBackup digests", WorkerCount, free, stop)
        {
            _size = size;
            _base = baseCopy;
            _output = output;
            _sent = sent;
            // The list of a file of zeros (constants; a short last segment hashed once): what segments without data keep.
            using (var zeros = new BlockDigestListBuilder(size, twoThreads: false))
            {
                var bytes = zeros.Complete().Bytes;
                _list = MemoryMarshal.TryGetArray(bytes, out var array) && array.Offset == 0 && array.Count == array.Array!.Length ? array.Array : bytes.ToArray();
            }
            _digested = new bool[BlockDigestList.SegmentCountFor(size)];
        }

        /// <summary>Two: segment digests and block digests cost as much as each other on a disk full of data, and twice
        /// as much where a segment's data is followed by zeros (they are part of its digest); more threads than two
        /// would only take the cores the reading and the other copies need.</summary>
        private static int WorkerCount => Math.Clamp(Environment.ProcessorCount, 1, 2);

        public long ResentBytes => Interlocked.Read(ref _resent);

        /// <summary>Hands over a chunk that holds data; chunks come in order.</summary>
        public void Add(Chunk chunk)
        {
            var segment = chunk.Offset / BlockDigestList.SegmentSize;
            if (_current?.Segment != segment)
            {
                _current?.Chunks.CompleteAdding();
                _current = new SegmentWork(segment);
                _segments.Add(_current);
            }
            _current.Chunks.Add(chunk);
        }

        /// <summary>After <see cref="Workers.Finish"/>: the list; for an incremental copy the blocks of the segments
        /// without data (zeros) are written where the base holds something else.</summary>
        public BlockDigestList Complete(CancellationToken ct)
        {
            var list = new BlockDigestList(_list);
            if (_base is not null)
            {
                for (long segment = 0; segment < _digested.Length; segment++)
                {
                    if (_digested[segment])
                        continue;
                    var first = segment * BlockDigestList.BlocksPerSegment;
                    var last = Math.Min(list.BlockCount, first + BlockDigestList.BlocksPerSegment);
                    for (var index = first; index < last; index++)
                        WriteIfDiffers(index, list.BlockDigest(index), null, ct);
                }
            }
            return list;
        }

        public override void Dispose()
        {
            base.Dispose();
            _segments.Dispose();
        }

        protected override void CompleteAdding()
        {
            _current?.Chunks.CompleteAdding();
            _segments.CompleteAdding();
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        protected override void Work(CancellationToken ct)
        {
            var held = new List<Chunk>();
            foreach (var work in _segments.GetConsumingEnumerable(ct))
            {
                var start = work.Segment * BlockDigestList.SegmentSize;
                var firstBlock = work.Segment * BlockDigestList.BlocksPerSegment;
                var length = Math.Min(BlockDigestList.SegmentSize, _size - start);
                // An incremental copy hashes a segment's bytes once, for its blocks: when every block matches the
                // base, so does the segment, and its digest is the base's (the base's list was checked against its
                // manifest, and its segments against the base copy where it lies). The segment's chunks are held
                // meanwhile (at most 16: chunks are 1 MiB-aligned, and the pool holds 64), and hashed for the segment
                // too once a block differs, as a full copy does.
                var fromBase = _base is not null && SameSegment(_base, work.Segment, length);
                using var blocks = new BlockDigestListBuilder(length, twoThreads: false, segments: !fromBase);
                BlockDigestListBuilder? segment = null;
                long decided = 0;
                var differs = false;
                try
                {
                    foreach (var chunk in work.Chunks.GetConsumingEnumerable(ct))
                    {
                        blocks.Append(chunk.Offset - start, chunk.Buffer.Span[..chunk.Length]);
                        // Decided while the chunk's bytes are at hand: the blocks before it (zeros) and its own.
                        for (; _base is not null && decided < blocks.CompletedBlocks; decided++)
                            differs |= WriteIfDiffers(firstBlock + decided, blocks.BlockDigest(decided), chunk, ct);
                        if (!fromBase)
                        {
                            chunk.Release(Free);
                            continue;
                        }
                        held.Add(chunk);
                        if (differs)
                            HashAndRelease(segment ??= new BlockDigestListBuilder(length, twoThreads: false, blocks: false), held, start);
                    }
                    var digests = blocks.Complete();
                    digests.Bytes.Span.Slice(BlockDigestList.HeaderSize, checked((int)digests.BlockCount * BlockDigestList.BlockDigestSize))
                        .CopyTo(_list.AsSpan(BlockDigestList.BlockDigestOffset(firstBlock)));
                    for (; _base is not null && decided < digests.BlockCount; decided++)
                        differs |= WriteIfDiffers(firstBlock + decided, digests.BlockDigest(decided), null, ct);
                    var listBlocks = BlockDigestList.BlockCountFor(_size);
                    var segmentDigest = _list.AsSpan(checked((int)(BlockDigestList.HeaderSize + listBlocks * BlockDigestList.BlockDigestSize
                        + work.Segment * BlockDigestList.SegmentDigestSize)), BlockDigestList.SegmentDigestSize);
                    if (!fromBase)
                    {
                        digests.SegmentDigest(0).CopyTo(segmentDigest);
                    }
                    else if (!differs)
                    {
                        _base!.List.SegmentDigest(work.Segment).CopyTo(segmentDigest);
                    }
                    else
                    {
                        // What is still held (all of it when a block differed only among the zeros after the last chunk).
                        HashAndRelease(segment ??= new BlockDigestListBuilder(length, twoThreads: false, blocks: false), held, start);
                        segment.Complete().SegmentDigest(0).CopyTo(segmentDigest);
                    }
                }
                finally
                {
                    segment?.Dispose();
                    Release(held);
                }
                _digested[work.Segment] = true;
            }
        }

        /// <summary>Feeds the held chunks, in order, to the segment's digest and hands their buffers back.</summary>
        private void HashAndRelease(BlockDigestListBuilder segment, List<Chunk> held, long start)
        {
            foreach (var chunk in held)
                segment.Append(chunk.Offset - start, chunk.Buffer.Span[..chunk.Length]);
            Release(held);
        }

        private void Release(List<Chunk> chunks)
        {
            foreach (var chunk in chunks)
                chunk.Release(Free);
            chunks.Clear();
        }

        /// <summary>Whether the base's list may hold the digest of segment <paramref name="segment"/> of the source
        /// (<paramref name="length"/> bytes): its segment is as long (equal whole blocks do not make equal segments of
        /// other lengths). A segment that rotted in the base copy has its blocks written, so it is hashed again.</summary>
        private static bool SameSegment(CopyBase based, long segment, long length) =>
            segment < based.List.SegmentCount
            && Math.Min(BlockDigestList.SegmentSize, based.List.FileSize - segment * BlockDigestList.SegmentSize) == length;

        /// <summary>Writes block <paramref name="index"/> whole when its digest differs from the base's or its segment
        /// rotted: from the chunk when it lies there, else (zeros nobody was handed) as zeros. One writer at a time.</summary>
        private bool WriteIfDiffers(long index, ReadOnlySpan<byte> digest, Chunk? chunk, CancellationToken ct)
        {
            var differs = BlockDiffers(_base!.List, _size, index, digest);
            var rotted = _base.RottedSegments.Count > 0 && _base.RottedSegments.Contains(index / BlockDigestList.BlocksPerSegment);
            if (!differs && !rotted)
                return false;
            var offset = index * BlockDigestList.BlockSize;
            var length = (int)Math.Min(BlockDigestList.BlockSize, _size - offset);
            ReadOnlyMemory<byte> bytes = chunk is not null && offset >= chunk.Offset && offset + length <= chunk.Offset + chunk.Length
                ? chunk.Buffer.Memory.Slice((int)(offset - chunk.Offset), length)
                : ZeroBlock.AsMemory(0, length);
            lock (_output!)
                Wait(_output.WriteAsync(offset, bytes, ct));
            _sent.Add(length);
            if (!differs)
                Interlocked.Add(ref _resent, length);
            return true;
        }

        /// <summary>A segment's chunks that hold data, for the one thread that takes it.</summary>
        private sealed class SegmentWork(long segment)
        {
            public long Segment => segment;

            public BlockingCollection<Chunk> Chunks { get; } = new();
        }
    }

    /// <summary>
    /// Whether block <paramref name="index"/> of a source of <paramref name="size"/> bytes, whose digest is
    /// <paramref name="digest"/>, differs from the same block of the base (an incremental copy writes it). A source of
    /// another size than the base (a qcow2 file grows and shrinks with its clusters) is compared by the digests where
    /// both hold a whole block; a block past the base's end, the base's short last block and the source's short last
    /// block differ, whatever their digests say: the clone does not hold them as the source does (what is not written
    /// past the base's end reads as zeros, and CompleteAsync cuts what lies past the source's).
    /// </summary>
    internal static bool BlockDiffers(BlockDigestList baseList, long size, long index, ReadOnlySpan<byte> digest)
    {
        if (size != baseList.FileSize)
        {
            var end = (index + 1) * BlockDigestList.BlockSize;
            if (end > size || end > baseList.FileSize)
                return true;
        }
        return baseList.BlockDiffers(index, digest);
    }

    /// <summary>A chunk of the source on its way to the digests, with its runs of non-zero 4 KiB blocks; its buffer
    /// goes back to the reader once the last of those it was handed to is done with it.</summary>
    private sealed class Chunk(long offset, int length, ChunkBuffer buffer, List<(int Start, int End)> runs, int users)
    {
        private int _users = users;

        public long Offset => offset;

        public int Length => length;

        public ChunkBuffer Buffer => buffer;

        public List<(int Start, int End)> Runs => runs;

        public void Release(BlockingCollection<ChunkBuffer> free)
        {
            if (Interlocked.Decrement(ref _users) == 0)
                free.Add(buffer);
        }
    }

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

    // One read asks for this many chunks (one preadv into as many buffers), and the reads run this many chunks ahead
    // of the thread that looks at them: O_DIRECT has no kernel read-ahead, so the next read is in flight while the
    // chunks of the last one are searched for data. 8 MiB requests 16 chunks ahead: on the lab host (a busy one)
    // the digest list of a 16 GiB vdisk holding 4 GiB took 13.9 s, against 19.6 s with 4 MiB 8 ahead, 25.2 s with
    // 2 MiB 4 ahead and 26.5 s with 1 MiB 4 ahead (one round each). The buffers cost 64 MiB per copy.
    private const int RequestChunks = 8;
    private const int ReadAheadChunks = 16;
    private const int EIntr = 4;
    private const int EInval = 22;
    private const int ORdOnly = 0;
    private const int OCloExec = 0x80000;

    // O_DIRECT is 040000 on x86-64 (ODA hosts), 0200000 on ARM.
    private static int ODirect => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x10000 : 0x4000;

    /// <summary>
    /// The source of a copy or a verification, read past the page cache (O_DIRECT) where its file system allows it:
    /// a backup reads whole disks, and through the cache it would push the host's working set out (an ODA host runs
    /// databases) and cost more CPU in the kernel than the hashing. Coherence: QEMU may hold dirty pages of the disk in
    /// the host's page cache (cache=writeback); an O_DIRECT read writes back the dirty pages of its range first, and the
    /// snapshot flushed the disk, so the read sees the frozen content. For a verification, O_DIRECT is what "read what
    /// the storage holds" asks for. Where O_DIRECT is refused (tmpfs and some FUSE file systems refuse the open; a
    /// device may refuse the first read), the source is read through the cache, as before, with no word to anyone.
    /// The buffered handle is always open: for lseek, and for what a direct read leaves (a file that shrank).
    /// </summary>
    private sealed class SourceFile : IDisposable
    {
        private readonly string _path;
        private SafeFileHandle? _direct;
        private bool _proved; // a direct read succeeded: a later EINVAL is an error, not a refusal of O_DIRECT

        private SourceFile(string path, SafeFileHandle handle, SafeFileHandle? direct)
        {
            _path = path;
            Handle = handle;
            _direct = direct;
            if (direct is null)
                ReadThroughCache();
        }

        /// <summary>The source opened for buffered reads (and lseek).</summary>
        public SafeFileHandle Handle { get; }

        /// <summary>Whether every read so far went past the page cache.</summary>
        public bool ReadsDirectly => _direct is not null;

        public static SourceFile Open(string path)
        {
            var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            // The same file opened again through its descriptor, not by its path: whatever the path names by now.
            // The buffered open worked, so a failure here is the file system refusing O_DIRECT (EINVAL): read through the cache.
            var fd = OpenFile($"/proc/self/fd/{handle.DangerousGetHandle()}", ORdOnly | ODirect | OCloExec);
            return new SourceFile(path, handle, fd >= 0 ? new SafeFileHandle(fd, ownsHandle: true) : null);
        }

        /// <summary>Reads <paramref name="length"/> bytes at <paramref name="offset"/> (a multiple of the chunk size)
        /// into <paramref name="count"/> buffers, one chunk each; what lies past the end of the file reads as zeros.
        /// <paramref name="extentEnd"/>: where the data extent being read ends (how far buffered reads may fetch ahead).</summary>
        public void Read(ChunkBuffer[] buffers, int count, long offset, long length, long extentEnd)
        {
            long done = 0;
            if (_direct is not null)
            {
                done = ReadDirect(buffers, count, offset, length);
                if (done >= length)
                    return;
                if (done < 0)
                    done = 0; // O_DIRECT refused: all through the cache
            }
            else if (offset + BufferedReadAhead < extentEnd)
            {
                // The kernel reads the extent ahead while this thread waits for the others. Never past the extent's
                // end, where it would fill a hole's page cache with zeros that SEEK_DATA then reports as data.
                _ = PosixFadvise((int)Handle.DangerousGetHandle(), offset + BufferedReadAhead,
                    Math.Min(length, extentEnd - offset - BufferedReadAhead), FadviseWillNeed);
            }
            for (var i = 0; i < count; i++)
            {
                var start = (long)i * ChunkSize;
                var end = Math.Min(start + ChunkSize, length);
                if (done >= end)
                    continue;
                var from = (int)(Math.Max(done, start) - start);
                ReadFully(Handle, buffers[i].Span[from..(int)(end - start)], offset + start + from);
            }
        }

        public void Dispose()
        {
            _direct?.Dispose();
            Handle.Dispose();
        }

        /// <summary>One preadv of the length rounded up to 4 KiB (the last chunk of a file; the read stops at its
        /// end): the bytes read, or -1 when the first direct read is refused (EINVAL) and the source is from now on
        /// read through the cache.</summary>
        private unsafe long ReadDirect(ChunkBuffer[] buffers, int count, long offset, long length)
        {
            var asked = (length + BlockSize - 1) & ~(long)(BlockSize - 1);
            var vectors = stackalloc IoVector[count];
            var used = 0;
            for (long left = asked; left > 0; left -= ChunkSize, used++)
                vectors[used] = new IoVector(buffers[used].Pointer, (nuint)Math.Min(ChunkSize, left));
            while (true)
            {
                var n = PReadV((int)_direct!.DangerousGetHandle(), vectors, used, offset);
                if (n >= 0)
                {
                    _proved = true;
                    return n;
                }
                var errno = Marshal.GetLastPInvokeError();
                if (errno == EIntr)
                    continue;
                if (errno == EInval && !_proved)
                {
                    _direct.Dispose();
                    _direct = null;
                    ReadThroughCache();
                    return -1;
                }
                throw new IOException($"Cannot read '{_path}' at offset {offset} (errno {errno}).");
            }
        }

        private void ReadThroughCache() => _ = PosixFadvise((int)Handle.DangerousGetHandle(), 0, 0, FadviseSequential);
    }

    /// <summary>A chunk's buffer at a 4 KiB-aligned address, as O_DIRECT needs: a pinned array a page longer, used from
    /// its first aligned byte. Managed memory: a writer still holding a slice of it can never see it freed.</summary>
    private sealed unsafe class ChunkBuffer
    {
        private readonly byte[] _array = GC.AllocateUninitializedArray<byte>(ChunkSize + BlockSize, pinned: true);
        private readonly int _start;

        public ChunkBuffer()
        {
            var address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_array));
            _start = (int)((BlockSize - (address & (BlockSize - 1))) & (BlockSize - 1));
        }

        public Span<byte> Span => _array.AsSpan(_start, ChunkSize);

        public Memory<byte> Memory => _array.AsMemory(_start, ChunkSize);

        public byte* Pointer => (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_array)) + _start;
    }

    /// <summary>
    /// A thread that reads the data extents' chunks in order, a request of <see cref="RequestChunks"/> at a time, and
    /// hands them to the walking thread, at most <see cref="ReadAheadChunks"/> ahead; its failure stops the copy and
    /// is thrown by <see cref="Finish"/>.
    /// </summary>
    private sealed class ReadAhead(SourceFile source, long size, BlockingCollection<ChunkBuffer> free, CancellationTokenSource stop) : IDisposable
    {
        private readonly BlockingCollection<(long Offset, int Length, ChunkBuffer Buffer)> _ready = new(ReadAheadChunks);
        private Thread? _thread;
        private ExceptionDispatchInfo? _failure;

        public void Start()
        {
            _thread = new Thread(Run) { IsBackground = true, Name = "OdaKvmBackup reads" };
            _thread.Start();
        }

        /// <summary>The chunks that hold data, in order: offset, length (the last one of the file may be short), bytes.</summary>
        public IEnumerable<(long Offset, int Length, ChunkBuffer Buffer)> Chunks(CancellationToken ct) => _ready.GetConsumingEnumerable(ct);

        /// <summary>Waits for the thread and throws its failure.</summary>
        public void Finish()
        {
            _thread?.Join();
            _failure?.Throw();
        }

        public void Dispose()
        {
            if (_thread is { IsAlive: true })
            {
                stop.Cancel();
                _thread.Join();
            }
            _ready.Dispose();
        }

        private void Run()
        {
            try
            {
                var ct = stop.Token;
                var buffers = new ChunkBuffer[RequestChunks];
                long next = 0;
                foreach (var (start, end) in DataExtents(source.Handle, size))
                {
                    // A chunk that straddles two extents is read once, with the first.
                    for (var chunk = Math.Max(start - start % ChunkSize, next); chunk < end; chunk += (long)RequestChunks * ChunkSize)
                    {
                        var count = (int)Math.Min(RequestChunks, (end - chunk + ChunkSize - 1) / ChunkSize);
                        var length = Math.Min((long)count * ChunkSize, size - chunk);
                        for (var i = 0; i < count; i++)
                            buffers[i] = free.Take(ct);
                        source.Read(buffers, count, chunk, length, end);
                        for (var i = 0; i < count; i++)
                        {
                            var offset = chunk + (long)i * ChunkSize;
                            _ready.Add((offset, (int)Math.Min(ChunkSize, size - offset), buffers[i]), ct);
                        }
                        next = chunk + (long)count * ChunkSize;
                    }
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
            }
            catch (Exception ex)
            {
                _failure = ExceptionDispatchInfo.Capture(ex);
                stop.Cancel();
            }
            finally
            {
                _ready.CompleteAdding();
            }
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private readonly unsafe struct IoVector(byte* address, nuint length)
    {
        public readonly byte* Address = address;
        public readonly nuint Length = length;
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenFile(string path, int flags);

    [LibraryImport("libc", EntryPoint = "preadv", SetLastError = true)]
    private static unsafe partial long PReadV(int fd, IoVector* vectors, int count, long offset);
}
