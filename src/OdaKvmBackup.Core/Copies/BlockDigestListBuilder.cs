using System.Runtime.ExceptionServices;
using System.Security.Cryptography;

namespace OdaKvmBackup.Core.Copies;

/// <summary>
/// Builds the <see cref="BlockDigestList"/> of a file from its bytes, fed in order as they are read: each piece
/// with its offset, the gaps between pieces being holes (zeros), the rest after the last piece too. Zeros cost
/// nothing where they can: an all-zero 64 KiB block gets <see cref="BlockDigestList.ZeroBlockDigest"/> without
/// hashing, and a segment that holds nothing but zeros <see cref="BlockDigestList.ZeroSegmentDigest"/>; zeros in a
/// segment that also holds data are hashed like any bytes, since its digest covers them.
/// <para>
/// A byte of data is hashed twice (its block's SHA-256, its segment's SHA-256: two digests that share no work), so
/// with <c>twoThreads</c> the segments are hashed on a thread of their own while the caller's thread hashes the
/// blocks; each <see cref="Append"/> returns when both are done with the piece, so the caller may reuse its buffer.
/// A builder may take one pass only (<c>blocks</c> or <c>segments</c> false): an incremental copy takes a segment's
/// digest from its base when every block of it matched (see SparseCopy's DigestWorkers).
/// </para>
/// </summary>
internal sealed class BlockDigestListBuilder : IDisposable
{
    // A smaller piece is hashed on the caller's thread alone: handing it over would cost more than it saves.
    private const int TwoThreadMinimum = 128 << 10;

    private readonly byte[] _list;
    private readonly BlockPass _blocks;
    private readonly SegmentPass _segments;
    private readonly bool _twoThreads;
    private readonly bool _hashBlocks;
    private readonly bool _hashSegments;
    private SegmentThread? _segmentThread;
    private long _position;
    private bool _completed;

    public BlockDigestListBuilder(long fileSize, bool twoThreads = true, bool blocks = true, bool segments = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(fileSize);
        if (fileSize > BlockDigestList.MaxFileSize)
        {
            throw new BackupException(ErrorIds.UnsupportedDisk, BackupErrorCategory.InvalidArgument,
                $"A disk file of {fileSize} bytes is larger than the {BlockDigestList.MaxFileSize} bytes (16 TiB) a digest list describes.",
                "Split the data over disks of at most 16 TiB each.");
        }
        FileSize = fileSize;
        _list = new byte[BlockDigestList.SerializedLength(fileSize)];
        BlockDigestList.WriteHeader(_list, fileSize);
        _blocks = new BlockPass(_list, fileSize);
        _segments = new SegmentPass(_list, fileSize);
        _twoThreads = twoThreads;
        _hashBlocks = blocks;
        _hashSegments = segments;
    }

    public long FileSize { get; }

    /// <summary>How far the file has been fed: the next piece starts here or later.</summary>
    public long Position => _position;

    /// <summary>Blocks whose digest is known: those that lie wholly before <see cref="Position"/>.</summary>
    public long CompletedBlocks => _blocks.Completed;

    /// <summary>The digest of a completed block, to compare with a base's (<see cref="BlockDigestList.BlockDiffers"/>).</summary>
    public ReadOnlySpan<byte> BlockDigest(long index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, CompletedBlocks);
        return _list.AsSpan(BlockDigestList.BlockDigestOffset(index), BlockDigestList.BlockDigestSize);
    }

    /// <summary>Feeds the bytes at <paramref name="offset"/> (at or after <see cref="Position"/>; what lies between is
    /// zeros, a hole).</summary>
    public void Append(long offset, ReadOnlySpan<byte> bytes)
    {
        ObjectDisposedException.ThrowIf(_completed, this);
        ArgumentOutOfRangeException.ThrowIfLessThan(offset, _position);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset, FileSize - bytes.Length);
        if (offset > _position)
            Feed(ReadOnlySpan<byte>.Empty, offset - _position);
        Feed(bytes, 0);
        _position = offset + bytes.Length;
    }

    /// <summary>Feeds the rest of the file as zeros and returns the list; the builder is done with.</summary>
    public BlockDigestList Complete()
    {
        ObjectDisposedException.ThrowIf(_completed, this);
        Feed(ReadOnlySpan<byte>.Empty, FileSize - _position);
        _position = FileSize;
        Dispose();
        return new BlockDigestList(_list);
    }

    public void Dispose()
    {
        _completed = true;
        _segmentThread?.Dispose();
        _segmentThread = null;
        _segments.Dispose();
    }

    /// <summary>Feeds <paramref name="bytes"/>, or when there are none <paramref name="zeros"/> zeros, to both passes.</summary>
    private unsafe void Feed(ReadOnlySpan<byte> bytes, long zeros)
    {
        var length = bytes.IsEmpty ? zeros : bytes.Length;
        if (length == 0)
            return;
        if (!_twoThreads || length < TwoThreadMinimum || !_hashBlocks || !_hashSegments)
        {
            if (_hashSegments)
                Feed(_segments, bytes, zeros);
            if (_hashBlocks)
                Feed(_blocks, bytes, zeros);
            return;
        }
        _segmentThread ??= new SegmentThread(_segments);
        fixed (byte* pointer = bytes)
        {
            // The segment thread reads the caller's bytes through the pointer: it is done with them before this returns.
            _segmentThread.Begin(pointer, bytes.Length, zeros);
            try
            {
                Feed(_blocks, bytes, zeros);
            }
            finally
            {
                _segmentThread.End();
            }
        }
    }

    private static void Feed(IPass pass, ReadOnlySpan<byte> bytes, long zeros)
    {
        if (bytes.IsEmpty)
            pass.AppendZeros(zeros);
        else
            pass.Append(bytes);
    }

    private static ReadOnlySpan<byte> Zeros => ZeroBuffer;

    private static readonly byte[] ZeroBuffer = new byte[BlockDigestList.BlockSize];

    private interface IPass
    {
        void Append(ReadOnlySpan<byte> bytes);

        void AppendZeros(long count);
    }

    /// <summary>The 64 KiB blocks: whole blocks are hashed where they lie, a block split over two pieces is gathered first.</summary>
    private sealed class BlockPass(byte[] list, long fileSize) : IPass
    {
        private readonly byte[] _partial = new byte[BlockDigestList.BlockSize];
        private int _filled;

        public long Completed { get; private set; }

        public void Append(ReadOnlySpan<byte> bytes)
        {
            while (!bytes.IsEmpty)
            {
                var length = BlockLength();
                if (_filled == 0 && bytes.Length >= length)
                {
                    Digest(bytes[..length]);
                    bytes = bytes[length..];
                    continue;
                }
                var take = Math.Min(length - _filled, bytes.Length);
                bytes[..take].CopyTo(_partial.AsSpan(_filled));
                _filled += take;
                bytes = bytes[take..];
                if (_filled == length)
                {
                    _filled = 0;
                    Digest(_partial.AsSpan(0, length));
                }
            }
        }

        public void AppendZeros(long count)
        {
            while (count > 0)
            {
                var length = BlockLength();
                if (_filled == 0 && count >= length)
                {
                    if (length == BlockDigestList.BlockSize)
                        Put(BlockDigestList.ZeroBlockDigest);
                    else
                        Digest(Zeros[..length]);
                    count -= length;
                    continue;
                }
                var take = (int)Math.Min(length - _filled, count);
                _partial.AsSpan(_filled, take).Clear();
                _filled += take;
                count -= take;
                if (_filled == length)
                {
                    _filled = 0;
                    Digest(_partial.AsSpan(0, length));
                }
            }
        }

        private int BlockLength() => (int)Math.Min(BlockDigestList.BlockSize, fileSize - Completed * BlockDigestList.BlockSize);

        private void Digest(ReadOnlySpan<byte> block)
        {
            if (block.Length == BlockDigestList.BlockSize && block.IndexOfAnyExcept((byte)0) < 0)
            {
                Put(BlockDigestList.ZeroBlockDigest);
                return;
            }
            Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
            SHA256.HashData(block, hash);
            Put(hash[..BlockDigestList.BlockDigestSize]);
        }

        private void Put(ReadOnlySpan<byte> digest)
        {
            digest.CopyTo(list.AsSpan(BlockDigestList.BlockDigestOffset(Completed), BlockDigestList.BlockDigestSize));
            Completed++;
        }
    }

    /// <summary>The 16 MiB segments, hashed as a stream; zeros at a segment's start are only counted until its
    /// first data (a segment of zeros only then gets the constant), and hashed when data follows.</summary>
    private sealed class SegmentPass : IPass, IDisposable
    {
        private readonly byte[] _list;
        private readonly long _fileSize;
        private readonly int _digestsOffset;
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private long _index;
        private long _done;
        private long _pendingZeros;
        private bool _hasData;

        public SegmentPass(byte[] list, long fileSize)
        {
            _list = list;
            _fileSize = fileSize;
            _digestsOffset = checked((int)(BlockDigestList.HeaderSize + BlockDigestList.BlockCountFor(fileSize) * BlockDigestList.BlockDigestSize));
        }

        public void Append(ReadOnlySpan<byte> bytes)
        {
            while (!bytes.IsEmpty)
            {
                var take = (int)Math.Min(SegmentLength() - _done, bytes.Length);
                var piece = bytes[..take];
                if (!_hasData && piece.IndexOfAnyExcept((byte)0) < 0)
                {
                    _pendingZeros += take;
                }
                else
                {
                    HashPendingZeros();
                    _hash.AppendData(piece);
                    _hasData = true;
                }
                bytes = bytes[take..];
                Advance(take);
            }
        }

        public void AppendZeros(long count)
        {
            while (count > 0)
            {
                var take = Math.Min(SegmentLength() - _done, count);
                if (_hasData)
                    HashZeros(take);
                else
                    _pendingZeros += take;
                count -= take;
                Advance(take);
            }
        }

        public void Dispose() => _hash.Dispose();

        private long SegmentLength() => Math.Min(BlockDigestList.SegmentSize, _fileSize - _index * BlockDigestList.SegmentSize);

        private void Advance(long count)
        {
            _done += count;
            if (_done < SegmentLength())
                return;
            var destination = _list.AsSpan(_digestsOffset + checked((int)(_index * BlockDigestList.SegmentDigestSize)), BlockDigestList.SegmentDigestSize);
            if (!_hasData && _done == BlockDigestList.SegmentSize)
            {
                BlockDigestList.ZeroSegmentDigest.CopyTo(destination);
            }
            else
            {
                HashPendingZeros(); // a short last segment of zeros only
                _hash.GetHashAndReset(destination);
            }
            _index++;
            _done = 0;
            _pendingZeros = 0;
            _hasData = false;
        }

        private void HashPendingZeros()
        {
            HashZeros(_pendingZeros);
            _pendingZeros = 0;
        }

        private void HashZeros(long count)
        {
            for (; count > 0; count -= Math.Min(count, Zeros.Length))
                _hash.AppendData(Zeros[..(int)Math.Min(count, Zeros.Length)]);
        }
    }

    /// <summary>A thread that runs the segment pass over the piece the caller's thread is hashing the blocks of.</summary>
    private sealed unsafe class SegmentThread : IDisposable
    {
        private readonly SegmentPass _pass;
        private readonly Thread _thread;
        private readonly SemaphoreSlim _start = new(0);
        private readonly SemaphoreSlim _done = new(0);
        private byte* _bytes;
        private int _length;
        private long _zeros;
        private bool _stop;
        private ExceptionDispatchInfo? _failure;

        public SegmentThread(SegmentPass pass)
        {
            _pass = pass;
            _thread = new Thread(Run) { IsBackground = true, Name = "OdaKvmBackup segment digests" };
            _thread.Start();
        }

        public void Begin(byte* bytes, int length, long zeros)
        {
            _bytes = bytes;
            _length = length;
            _zeros = zeros;
            _failure = null;
            _start.Release();
        }

        public void End()
        {
            _done.Wait();
            _failure?.Throw();
        }

        public void Dispose()
        {
            _stop = true;
            _start.Release();
            _thread.Join();
            _start.Dispose();
            _done.Dispose();
        }

        private void Run()
        {
            while (true)
            {
                _start.Wait();
                if (_stop)
                    return;
                try
                {
                    Feed(_pass, new ReadOnlySpan<byte>(_bytes, _length), _zeros);
                }
                catch (Exception ex)
                {
                    _failure = ExceptionDispatchInfo.Capture(ex);
                }
                _done.Release();
            }
        }
    }
}
