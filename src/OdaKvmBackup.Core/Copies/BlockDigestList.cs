using System.Buffers.Binary;
using System.Security.Cryptography;

namespace OdaKvmBackup.Core.Copies;

/// <summary>
/// The digests of one file: per 64 KiB block the first 6 bytes of the SHA-256 of its bytes (the hint that says
/// which blocks changed), per 16 MiB segment the SHA-256 of its bytes (what a copy is verified with), holes read
/// as zeros and a short last block or segment hashed as it is. Anyone can reproduce them:
/// <c>dd if=F bs=64K skip=i count=1 | sha256sum | cut -c1-12</c> and <c>dd if=F bs=16M skip=n count=1 | sha256sum</c>.
/// <para>
/// Stored as a file whose bytes are exactly what this object holds, little-endian: magic <c>OKVMDIG1</c>, uint32
/// block size (65536), uint32 segment size in blocks (256), int64 file size, int64 block count, int64 segment count,
/// then the 6-byte block digests, then the 32-byte segment digests: 0.0094% of the file's size. The only ways to get
/// one are <see cref="BlockDigestListBuilder"/> (from the file's bytes) and <see cref="Parse"/>/<see cref="ReadAsync"/>
/// (from a stored list, untrusted: every field checked before anything is allocated), so whoever holds one holds a
/// list whose counts and length agree with its file size.
/// </para>
/// </summary>
internal sealed class BlockDigestList
{
    public const int BlockSize = 64 << 10;
    public const int BlocksPerSegment = 256;
    public const long SegmentSize = (long)BlockSize * BlocksPerSegment;
    public const int BlockDigestSize = 6;
    public const int SegmentDigestSize = 32;
    public const int HeaderSize = 40;

    /// <summary>The largest file a list describes: its list then takes 1.6 GB, about the most one array holds.</summary>
    public const long MaxFileSize = 16L << 40;

    private const string Unusable = "Without a list it can trust, the set's copy can neither be verified nor serve as the base of the next backup: back up the VM again; keep the set only to inspect it by hand.";

    /// <summary>The file starts with these 8 bytes; the digit is the format's version.</summary>
    public static ReadOnlySpan<byte> Magic => "OKVMDIG1"u8;

    /// <summary>The block digest of 64 KiB of zeros (SHA-256 de2f2560 64a0...): a hole's, taken without hashing.</summary>
    public static ReadOnlySpan<byte> ZeroBlockDigest => [0xde, 0x2f, 0x25, 0x60, 0x64, 0xa0];

    /// <summary>The SHA-256 of 16 MiB of zeros: the segment digest of a segment that is all holes, taken without hashing.</summary>
    public static ReadOnlySpan<byte> ZeroSegmentDigest =>
    [
        0x08, 0x0a, 0xcf, 0x35, 0xa5, 0x07, 0xac, 0x98, 0x49, 0xcf, 0xcb, 0xa4, 0x7d, 0xc2, 0xad, 0x83,
        0xe0, 0x1b, 0x75, 0x66, 0x3a, 0x51, 0x62, 0x79, 0xc8, 0xb9, 0xd2, 0x43, 0xb7, 0x19, 0x64, 0x3e,
    ];

    private readonly byte[] _bytes;
    private string? _sha256;

    /// <summary>Takes <paramref name="bytes"/> (the serialized list) as they are: only for the builder and the parser, which checked them.</summary>
    internal BlockDigestList(byte[] bytes)
    {
        _bytes = bytes;
        FileSize = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(16));
        BlockCount = BlockCountFor(FileSize);
        SegmentCount = SegmentCountFor(FileSize);
    }

    public long FileSize { get; }

    public long BlockCount { get; }

    public long SegmentCount { get; }

    /// <summary>The list as stored: what is written to the set, and what <see cref="Sha256"/> is taken of.</summary>
    public ReadOnlyMemory<byte> Bytes => _bytes;

    /// <summary>The SHA-256 of the stored list, lowercase hex: what the manifest records, so that a list read back
    /// from a set can be checked against it.</summary>
    public string Sha256 => _sha256 ??= Convert.ToHexString(SHA256.HashData(_bytes)).ToLowerInvariant();

    public ReadOnlySpan<byte> BlockDigest(long index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, BlockCount);
        return _bytes.AsSpan(BlockDigestOffset(index), BlockDigestSize);
    }

    public ReadOnlySpan<byte> SegmentDigest(long index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, SegmentCount);
        return _bytes.AsSpan(SegmentDigestOffset(index), SegmentDigestSize);
    }

    /// <summary>A segment's digest as sha256sum prints it.</summary>
    public string SegmentDigestHex(long index) => Convert.ToHexString(SegmentDigest(index)).ToLowerInvariant();

    /// <summary>
    /// Whether block <paramref name="index"/> of a new version of the file, whose block digest is
    /// <paramref name="digest"/>, differs from this list's block at the same index: a block this list does not have
    /// (the file grew) differs. Equal digests are a hint, not a proof: the copy built on them is verified by segment.
    /// </summary>
    public bool BlockDiffers(long index, ReadOnlySpan<byte> digest)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        return index >= BlockCount || !BlockDigest(index).SequenceEqual(digest);
    }

    /// <summary>The blocks of <paramref name="newer"/> (a later list of the same file) that differ from this list, in order.</summary>
    public IEnumerable<long> DifferingBlocks(BlockDigestList newer)
    {
        ArgumentNullException.ThrowIfNull(newer);
        for (long index = 0; index < newer.BlockCount; index++)
        {
            if (BlockDiffers(index, newer.BlockDigest(index)))
                yield return index;
        }
    }

    /// <summary>The segments whose digest in <paramref name="readBack"/> (this file's list taken again from where it
    /// lies) differs from this list's, in order, up to the end of the shorter list.</summary>
    public IEnumerable<long> DifferingSegments(BlockDigestList readBack)
    {
        ArgumentNullException.ThrowIfNull(readBack);
        for (long index = 0; index < Math.Min(SegmentCount, readBack.SegmentCount); index++)
        {
            if (!SegmentDigest(index).SequenceEqual(readBack.SegmentDigest(index)))
                yield return index;
        }
    }

    /// <summary>Whether segment <paramref name="index"/> read as <paramref name="hexDigest"/> (as sha256sum prints it)
    /// where it lies: a segment that does not is not what this list says (it rotted, or the list is not this file's).</summary>
    public bool SegmentMatches(long index, string hexDigest)
    {
        ArgumentNullException.ThrowIfNull(hexDigest);
        return index >= 0 && index < SegmentCount && string.Equals(SegmentDigestHex(index), hexDigest, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>The bytes of the 64 KiB blocks that are not zeros: the data a copy holds, and a read-back reads.</summary>
    public long DataBytes()
    {
        long bytes = 0;
        for (long block = 0; block < BlockCount; block++)
        {
            if (!BlockDigest(block).SequenceEqual(ZeroBlockDigest))
                bytes += Math.Min(BlockSize, FileSize - block * BlockSize);
        }
        return bytes;
    }

    /// <summary>The segment digests of sets of Format OdaKvmBackup/2 (hex, by segment number): every segment but those
    /// of 16 MiB of zeros, which have none there and are checked by reading as zeros.</summary>
    public SortedDictionary<long, string> DataSegmentDigests()
    {
        var digests = new SortedDictionary<long, string>();
        for (long index = 0; index < SegmentCount; index++)
        {
            if (!SegmentDigest(index).SequenceEqual(ZeroSegmentDigest))
                digests[index] = SegmentDigestHex(index);
        }
        return digests;
    }

    public static long BlockCountFor(long fileSize) => (fileSize + BlockSize - 1) / BlockSize;

    public static long SegmentCountFor(long fileSize) => (fileSize + SegmentSize - 1) / SegmentSize;

    /// <summary>The exact length of the list of a file of <paramref name="fileSize"/> bytes.</summary>
    public static long SerializedLength(long fileSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(fileSize);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(fileSize, MaxFileSize);
        return HeaderSize + BlockCountFor(fileSize) * BlockDigestSize + SegmentCountFor(fileSize) * SegmentDigestSize;
    }

    /// <summary>
    /// A stored list, read as untrusted input: the header must be this format's (magic, 64 KiB blocks, 256 blocks per
    /// segment), its counts those of its file size, its length exactly what they imply and at most
    /// <paramref name="maxLength"/>, and its file size <paramref name="expectedFileSize"/> when given. Anything else
    /// is a <see cref="BackupException"/> (<see cref="ErrorIds.BackupSetUnreadable"/>) naming <paramref name="where"/>.
    /// </summary>
    public static BlockDigestList Parse(ReadOnlySpan<byte> bytes, long maxLength, long? expectedFileSize, string where)
    {
        if (bytes.Length < HeaderSize)
            throw Unreadable(where, $"it holds {bytes.Length} bytes, less than the {HeaderSize}-byte header");
        var length = CheckHeader(bytes[..HeaderSize], maxLength, expectedFileSize, where);
        if (bytes.Length != length)
            throw Unreadable(where, $"it holds {bytes.Length} bytes where its header says {length}");
        return new BlockDigestList(bytes.ToArray());
    }

    /// <summary>As <see cref="Parse"/>, from a stream read to its end: nothing past the header is allocated before the
    /// header is checked, and a stream that ends early or goes on past the length the header implies is refused. A
    /// <see cref="BackupException"/> from the stream (a lost connection) and cancellation pass through as they are;
    /// other read errors become <see cref="ErrorIds.BackupSetUnreadable"/>.</summary>
    public static async Task<BlockDigestList> ReadAsync(Stream stream, long maxLength, long? expectedFileSize, string where, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(stream);
        try
        {
            var header = new byte[HeaderSize];
            var read = await stream.ReadAtLeastAsync(header, HeaderSize, throwOnEndOfStream: false, ct).ConfigureAwait(false);
            if (read < HeaderSize)
                throw Unreadable(where, $"it holds {read} bytes, less than the {HeaderSize}-byte header");
            var length = CheckHeader(header, maxLength, expectedFileSize, where);
            var bytes = GC.AllocateUninitializedArray<byte>((int)length);
            header.CopyTo(bytes, 0);
            read = HeaderSize + await stream.ReadAtLeastAsync(bytes.AsMemory(HeaderSize), bytes.Length - HeaderSize, throwOnEndOfStream: false, ct).ConfigureAwait(false);
            if (read < length)
                throw Unreadable(where, $"it ends after {read} bytes where its header says {length}");
            if (await stream.ReadAsync(new byte[1], ct).ConfigureAwait(false) != 0)
                throw Unreadable(where, $"it goes on past the {length} bytes its header says");
            return new BlockDigestList(bytes);
        }
        catch (IOException ex)
        {
            throw Unreadable(where, ex.Message, ex);
        }
    }

    /// <summary>Checks a header and returns the list's length, which it proved is at most <paramref name="maxLength"/>.</summary>
    private static long CheckHeader(ReadOnlySpan<byte> header, long maxLength, long? expectedFileSize, string where)
    {
        if (!header[..8].SequenceEqual(Magic))
            throw Unreadable(where, "it does not start with OKVMDIG1: it is not a digest list of this format");
        var blockSize = BinaryPrimitives.ReadUInt32LittleEndian(header[8..]);
        if (blockSize != BlockSize)
            throw Unreadable(where, $"its block size is {blockSize}, not {BlockSize}");
        var blocksPerSegment = BinaryPrimitives.ReadUInt32LittleEndian(header[12..]);
        if (blocksPerSegment != BlocksPerSegment)
            throw Unreadable(where, $"its segments have {blocksPerSegment} blocks, not {BlocksPerSegment}");
        var fileSize = BinaryPrimitives.ReadInt64LittleEndian(header[16..]);
        if (fileSize is < 0 or > MaxFileSize)
            throw Unreadable(where, $"its file size {fileSize} is out of range (0 to {MaxFileSize})");
        if (expectedFileSize is { } expected && fileSize != expected)
            throw Unreadable(where, $"it describes a file of {fileSize} bytes, not the {expected} bytes of the copy");
        var blockCount = BinaryPrimitives.ReadInt64LittleEndian(header[24..]);
        if (blockCount != BlockCountFor(fileSize))
            throw Unreadable(where, $"it counts {blockCount} blocks for a file of {fileSize} bytes, which has {BlockCountFor(fileSize)}");
        var segmentCount = BinaryPrimitives.ReadInt64LittleEndian(header[32..]);
        if (segmentCount != SegmentCountFor(fileSize))
            throw Unreadable(where, $"it counts {segmentCount} segments for a file of {fileSize} bytes, which has {SegmentCountFor(fileSize)}");
        var length = SerializedLength(fileSize);
        if (length > maxLength)
            throw Unreadable(where, $"its header says {length} bytes, more than the {maxLength} expected");
        return length;
    }

    /// <summary>The header of the list of a file of <paramref name="fileSize"/> bytes.</summary>
    internal static void WriteHeader(Span<byte> header, long fileSize)
    {
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], BlockSize);
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], BlocksPerSegment);
        BinaryPrimitives.WriteInt64LittleEndian(header[16..], fileSize);
        BinaryPrimitives.WriteInt64LittleEndian(header[24..], BlockCountFor(fileSize));
        BinaryPrimitives.WriteInt64LittleEndian(header[32..], SegmentCountFor(fileSize));
    }

    internal static int BlockDigestOffset(long index) => checked((int)(HeaderSize + index * BlockDigestSize));

    internal int SegmentDigestOffset(long index) => checked((int)(HeaderSize + BlockCount * BlockDigestSize + index * SegmentDigestSize));

    private static BackupException Unreadable(string where, string why, Exception? inner = null) =>
        new(ErrorIds.BackupSetUnreadable, BackupErrorCategory.InvalidData, $"The digest list '{where}' cannot be read: {why}.", Unusable, where, inner);
}
