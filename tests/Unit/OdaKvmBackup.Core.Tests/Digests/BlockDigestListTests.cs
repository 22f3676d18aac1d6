using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Digests;

/// <summary>The block digest list: built from a file's bytes as a copy reads them, stored, read back as untrusted
/// input, compared; and reproduced with dd and sha256sum, as its documentation promises.</summary>
public sealed class BlockDigestListTests : IDisposable
{
    private const int KiB = 1 << 10;
    private const int MiB = 1 << 20;
    private const long Segment = 16L * MiB;
    private readonly TempFolder _temp = new("digest-list-tests");

    public void Dispose() => _temp.Dispose();

    /// <summary>
    /// Four segments and a bit: segment 0 holds data, a hole and a block of written zeros; segment 1 is a hole;
    /// segment 2 is written zeros with one non-zero byte at its very end; the short last segment ends in a short block
    /// of data. Returned as the file's bytes (holes are zeros) and the data extents written.
    /// </summary>
    private static (byte[] Content, (long Offset, int Length)[] Data) Layout()
    {
        var size = 4 * Segment + 200 * KiB + 1234;
        var content = new byte[size];
        var random = new Random(15);
        (long Offset, int Length)[] data =
        [
            (0, 640 * KiB),                   // blocks 0-9
            (3 * MiB + 100, 70 * KiB),        // straddles blocks 48-49
            (5 * MiB, 64 * KiB),              // block 80: written, all zeros
            (2 * Segment, (int)Segment),      // segment 2: written zeros ...
            (4 * Segment, 200 * KiB + 1234),  // the last segment, its last block 1234 bytes
        ];
        foreach (var (offset, length) in data)
        {
            if (offset == 5 * MiB || offset == 2 * Segment)
                continue; // zeros
            random.NextBytes(content.AsSpan((int)offset, length));
        }
        content[3 * Segment - 1] = 0x5a; // ... ending in one byte of data
        return (content, data);
    }

    private static BlockDigestList Build(byte[] content, (long Offset, int Length)[] data, bool twoThreads, int pieceSize)
    {
        using var builder = new BlockDigestListBuilder(content.Length, twoThreads);
        foreach (var (offset, length) in data)
        {
            // In pieces of pieceSize, as a copy reads them: a piece may start and end anywhere in a block.
            for (var done = 0; done < length; done += pieceSize)
            {
                var count = Math.Min(pieceSize, length - done);
                builder.Append(offset + done, content.AsSpan((int)offset + done, count));
            }
        }
        return builder.Complete();
    }

    /// <summary>The digests computed the plain way, each block and each segment hashed from the whole file's bytes.</summary>
    private static (string[] Blocks, string[] Segments) Expected(byte[] content)
    {
        var blocks = Enumerable.Range(0, (content.Length + 65535) / 65536)
            .Select(i => Hex(SHA256.HashData(content.AsSpan(i * 65536, Math.Min(65536, content.Length - i * 65536))))[..12]).ToArray();
        var segments = Enumerable.Range(0, (int)((content.Length + Segment - 1) / Segment))
            .Select(i => Hex(SHA256.HashData(content.AsSpan((int)(i * Segment), (int)Math.Min(Segment, content.Length - i * Segment))))).ToArray();
        return (blocks, segments);
    }

    [Theory]
    [InlineData(false, MiB)]
    [InlineData(true, MiB)]
    [InlineData(true, 3 * MiB + 4097)]
    [InlineData(true, 40 * KiB + 3)]
    [InlineData(false, 4096)]
    public void The_list_holds_each_block_s_and_each_segment_s_sha256_however_the_file_is_fed(bool twoThreads, int pieceSize)
    {
        var (content, data) = Layout();

        var list = Build(content, data, twoThreads, pieceSize);

        var (blocks, segments) = Expected(content);
        Assert.Equal(content.Length, list.FileSize);
        Assert.Equal(blocks.Length, list.BlockCount);
        Assert.Equal(segments.Length, list.SegmentCount);
        Assert.Equal(blocks, Enumerable.Range(0, blocks.Length).Select(i => Hex(list.BlockDigest(i))));
        Assert.Equal(segments, Enumerable.Range(0, segments.Length).Select(i => list.SegmentDigestHex(i)));
    }

    // The copy engine feeds the blocks and the segments apart, each on a thread of its own at its own pace, and
    // leaves out pieces of zeros only: the list must not depend on it.
    [Fact]
    public void The_stored_list_has_the_documented_layout_and_size_and_its_sha256_is_that_of_its_bytes()
    {
        var (content, data) = Layout();
        var list = Build(content, data, twoThreads: true, MiB);
        var bytes = list.Bytes.Span;

        Assert.Equal("OKVMDIG1"u8.ToArray(), bytes[..8].ToArray());
        Assert.Equal(65536u, BinaryPrimitives.ReadUInt32LittleEndian(bytes[8..]));
        Assert.Equal(256u, BinaryPrimitives.ReadUInt32LittleEndian(bytes[12..]));
        Assert.Equal(content.Length, BinaryPrimitives.ReadInt64LittleEndian(bytes[16..]));
        Assert.Equal(list.BlockCount, BinaryPrimitives.ReadInt64LittleEndian(bytes[24..]));
        Assert.Equal(list.SegmentCount, BinaryPrimitives.ReadInt64LittleEndian(bytes[32..]));
        Assert.Equal(40 + list.BlockCount * 6 + list.SegmentCount * 32, bytes.Length);
        Assert.Equal(list.BlockDigest(3).ToArray(), bytes.Slice(40 + 3 * 6, 6).ToArray());
        Assert.Equal(list.SegmentDigest(4).ToArray(), bytes.Slice((int)(40 + list.BlockCount * 6 + 4 * 32), 32).ToArray());
        Assert.Equal(Hex(SHA256.HashData(bytes)), list.Sha256);
        // Under the 0.01% of the disk's size, for a disk of 500 GiB as for this file.
        Assert.True(BlockDigestList.SerializedLength(500L << 30) < (500L << 30) / 10_000);
    }

    [Fact]
    public async Task A_stored_list_reads_back_as_the_same_list()
    {
        var (content, data) = Layout();
        var list = Build(content, data, twoThreads: true, MiB);
        var maxLength = BlockDigestList.SerializedLength(content.Length);

        var parsed = BlockDigestList.Parse(list.Bytes.Span, maxLength, content.Length, "list");
        await using var stream = new MemoryStream(list.Bytes.ToArray());
        var read = await BlockDigestList.ReadAsync(stream, maxLength, content.Length, "list", CancellationToken.None);

        foreach (var back in new[] { parsed, read })
        {
            Assert.Equal(list.Bytes.ToArray(), back.Bytes.ToArray());
            Assert.Equal(list.Sha256, back.Sha256);
            Assert.Equal(list.FileSize, back.FileSize);
            Assert.Empty(list.DifferingBlocks(back));
            Assert.All(Enumerable.Range(0, (int)list.SegmentCount), i => Assert.True(back.SegmentMatches(i, list.SegmentDigestHex(i))));
        }
    }

    [Fact]
    public void The_zero_constants_are_the_sha256_of_zeros()
    {
        Assert.Equal(SHA256.HashData(new byte[64 * KiB]).AsSpan(0, 6).ToArray(), BlockDigestList.ZeroBlockDigest.ToArray());
        Assert.Equal(SHA256.HashData(new byte[16 * MiB]), BlockDigestList.ZeroSegmentDigest.ToArray());
    }

    [Fact]
    public void A_file_of_holes_only_and_an_empty_file_get_their_lists_without_any_data()
    {
        var size = 3 * Segment + 5;
        using (var builder = new BlockDigestListBuilder(size))
        {
            var list = builder.Complete();
            var (blocks, segments) = Expected(new byte[size]);
            Assert.Equal(blocks, Enumerable.Range(0, blocks.Length).Select(i => Hex(list.BlockDigest(i))));
            Assert.Equal(segments, Enumerable.Range(0, segments.Length).Select(i => list.SegmentDigestHex(i)));
        }
        using var empty = new BlockDigestListBuilder(0);
        var none = empty.Complete();
        Assert.Equal(0, none.BlockCount);
        Assert.Equal(0, none.SegmentCount);
        Assert.Equal(40, none.Bytes.Length);
    }

    /// <summary>The promise of the documentation: anyone can check a list with dd and sha256sum.</summary>
    [Fact]
    public async Task Every_digest_is_what_dd_and_sha256sum_print_for_the_real_file()
    {
        var (content, data) = Layout();
        var file = _temp.Combine("disk with spaces");
        await using (var stream = new FileStream(file, FileMode.CreateNew, FileAccess.Write))
        {
            stream.SetLength(content.Length); // what is not written stays a hole
            foreach (var (offset, length) in data)
            {
                stream.Position = offset;
                stream.Write(content, (int)offset, length);
            }
        }
        var list = Build(content, data, twoThreads: true, MiB);
        var lastBlock = list.BlockCount - 1;

        // A block of data, one that straddles data and a hole, a hole, written zeros, the short last block.
        foreach (var block in new[] { 0L, 48, 49, 60, 80, lastBlock })
        {
            var printed = await ShellAsync("""dd if="$1" bs=64K skip="$2" count=1 2>/dev/null | sha256sum | cut -c1-12""", file, block);
            Assert.Equal(printed, Hex(list.BlockDigest(block)));
        }
        // Data and holes, a hole only, written zeros ending in a byte of data, the short last segment.
        foreach (var segment in new[] { 0L, 1, 2, 3, 4 })
        {
            var printed = await ShellAsync("""dd if="$1" bs=16M skip="$2" count=1 2>/dev/null | sha256sum | cut -c1-64""", file, segment);
            Assert.Equal(printed, list.SegmentDigestHex(segment));
        }
        Assert.Equal(Hex(BlockDigestList.ZeroSegmentDigest), list.SegmentDigestHex(1));
        Assert.Equal(Hex(BlockDigestList.ZeroBlockDigest), Hex(list.BlockDigest(80)));
    }

    [Fact]
    public void Blocks_that_changed_and_only_those_differ_from_the_base()
    {
        var (content, data) = Layout();
        var baseList = Build(content, data, twoThreads: false, MiB);
        var changed = (byte[])content.Clone();
        changed[5 * 65536 + 77] ^= 1;                              // one byte in block 5
        changed.AsSpan(100 * 65536, 65536).Clear();                // block 100 became zeros (it was a hole: unchanged)
        changed.AsSpan(2 * 65536, 65536).Clear();                  // block 2 was data, became zeros
        changed[(int)Segment + 3 * 65536] = 1;                     // a byte written into the hole of segment 1
        changed[^1] ^= 0xff;                                       // the short last block

        var newList = Build(changed, [(0, changed.Length)], twoThreads: true, MiB);

        long[] expected = [2, 5, 259, newList.BlockCount - 1];
        Assert.Equal(expected, baseList.DifferingBlocks(newList));
        Assert.True(baseList.BlockDiffers(newList.BlockCount, newList.BlockDigest(0)), "a block the base does not have differs");
        Assert.False(baseList.SegmentMatches(0, newList.SegmentDigestHex(0)));
        Assert.True(baseList.SegmentMatches(2, newList.SegmentDigestHex(2)));
    }

    [Fact]
    public void While_building_each_completed_block_can_be_compared_with_the_base()
    {
        var (content, data) = Layout();
        var baseList = Build(content, data, twoThreads: false, MiB);
        var changed = (byte[])content.Clone();
        changed[7 * 65536] ^= 1;
        using var builder = new BlockDigestListBuilder(changed.Length);
        var differing = new List<long>();
        long compared = 0;
        for (var offset = 0; offset < changed.Length; offset += MiB)
        {
            builder.Append(offset, changed.AsSpan(offset, Math.Min(MiB, changed.Length - offset)));
            for (; compared < builder.CompletedBlocks; compared++)
            {
                if (baseList.BlockDiffers(compared, builder.BlockDigest(compared)))
                    differing.Add(compared);
            }
        }
        builder.Complete();

        Assert.Equal([7L], differing);
        Assert.Equal(baseList.BlockCount, compared);
    }

    [Fact]
    public void Pieces_out_of_order_or_past_the_end_are_a_programming_error()
    {
        using var builder = new BlockDigestListBuilder(MiB);
        builder.Append(4096, new byte[100]);

        Assert.Throws<ArgumentOutOfRangeException>(() => builder.Append(4000, new byte[10]));
        Assert.Throws<ArgumentOutOfRangeException>(() => builder.Append(MiB - 5, new byte[10]));
        Assert.Throws<ArgumentOutOfRangeException>(() => builder.BlockDigest(0));
    }

    [Fact]
    public void A_file_larger_than_a_list_describes_is_refused_with_the_limit_named()
    {
        var error = Assert.Throws<BackupException>(() => new BlockDigestListBuilder(BlockDigestList.MaxFileSize + 1));

        Assert.Equal(ErrorIds.UnsupportedDisk, error.ErrorId);
        Assert.Contains("16 TiB", error.Message, StringComparison.Ordinal);
    }

    // ------------------------------------------------------------------ untrusted input

    public static TheoryData<string, Func<byte[], byte[]>, string> Lies() => new()
    {
        { "magic", b => Set(b, 0, "OKVMDIG2"u8.ToArray()), "OKVMDIG1" },
        { "block size 4 KiB", b => SetUInt32(b, 8, 4096), "block size is 4096" },
        { "block size 0", b => SetUInt32(b, 8, 0), "block size is 0" },
        { "segment of 128 blocks", b => SetUInt32(b, 12, 128), "128 blocks" },
        { "negative file size", b => SetInt64(b, 16, -1), "out of range" },
        { "file size past the limit", b => SetInt64(b, 16, (16L << 40) + 1), "out of range" },
        { "one block more", b => SetInt64(b, 24, ReadInt64(b, 24) + 1), "blocks" },
        { "one block less", b => SetInt64(b, 24, ReadInt64(b, 24) - 1), "blocks" },
        { "one segment more", b => SetInt64(b, 32, ReadInt64(b, 32) + 1), "segments" },
        { "a larger file, counts to match", b => SetSize(b, ReadInt64(b, 16) + 65536), "bytes" },
        { "a smaller file, counts to match", b => SetSize(b, ReadInt64(b, 16) - 17L * MiB), "bytes" },
        { "one byte short", b => b[..^1], "bytes" },
        { "one byte more", b => [.. b, 0], "bytes" },
        { "a header only", b => b[..40], "bytes" },
        { "less than a header", b => b[..39], "header" },
        { "empty", _ => [], "header" },
    };

    [Theory]
    [MemberData(nameof(Lies))]
    public async Task A_list_that_lies_is_refused_as_unreadable_whether_parsed_or_read(string lie, Func<byte[], byte[]> tamper, string named)
    {
        var (content, data) = Layout();
        var honest = Build(content, data, twoThreads: true, MiB).Bytes.ToArray();
        var bytes = tamper(honest);
        // The caller's limit allows a list of a file twice this size: only the header's consistency refuses it.
        var maxLength = BlockDigestList.SerializedLength(2L * content.Length);

        var parsed = Assert.Throws<BackupException>(() => BlockDigestList.Parse(bytes, maxLength, null, "set/disk.digests"));
        await using var stream = new MemoryStream(bytes);
        var read = await Assert.ThrowsAsync<BackupException>(() => BlockDigestList.ReadAsync(stream, maxLength, null, "set/disk.digests", CancellationToken.None));

        foreach (var error in new[] { parsed, read })
        {
            Assert.Equal(ErrorIds.BackupSetUnreadable, error.ErrorId);
            Assert.Equal(BackupErrorCategory.InvalidData, error.Category);
            Assert.Contains("set/disk.digests", error.Message, StringComparison.Ordinal);
            Assert.Contains(named, error.Message, StringComparison.Ordinal);
            Assert.NotNull(error.RecommendedAction);
        }
        Assert.NotEmpty(lie);
    }

    [Fact]
    public async Task A_list_for_another_file_size_than_the_copy_s_or_longer_than_the_caller_allows_is_refused()
    {
        var (content, data) = Layout();
        var bytes = Build(content, data, twoThreads: true, MiB).Bytes.ToArray();

        var otherSize = Assert.Throws<BackupException>(() => BlockDigestList.Parse(bytes, long.MaxValue, content.Length + 1, "l"));
        Assert.Contains($"not the {content.Length + 1} bytes of the copy", otherSize.Message, StringComparison.Ordinal);
        var tooLong = Assert.Throws<BackupException>(() => BlockDigestList.Parse(bytes, bytes.Length - 1, null, "l"));
        Assert.Contains($"more than the {bytes.Length - 1} expected", tooLong.Message, StringComparison.Ordinal);
        await using var stream = new MemoryStream(bytes);
        var tooLongRead = await Assert.ThrowsAsync<BackupException>(() => BlockDigestList.ReadAsync(stream, bytes.Length - 1, null, "l", CancellationToken.None));
        Assert.Equal(ErrorIds.BackupSetUnreadable, tooLongRead.ErrorId);
    }

    /// <summary>A header that claims a 10 TiB disk (its list would be 1 GB) over a stream that never ends: refused
    /// after reading the header, having allocated next to nothing.</summary>
    [Fact]
    public async Task A_header_that_claims_a_huge_file_allocates_nothing_before_it_is_refused()
    {
        var header = new byte[40];
        BlockDigestList.WriteHeader(header, 10L << 40);
        await using var stream = new EndlessStream(header);
        var allocatedBefore = GC.GetAllocatedBytesForCurrentThread();

        var error = await Assert.ThrowsAsync<BackupException>(() =>
            BlockDigestList.ReadAsync(stream, BlockDigestList.SerializedLength(1L << 30), null, "huge", CancellationToken.None));

        var allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
        Assert.Equal(ErrorIds.BackupSetUnreadable, error.ErrorId);
        Assert.True(allocated < MiB, $"{allocated} bytes were allocated to refuse it");
        Assert.Equal(40, stream.Position);
    }

    [Fact]
    public async Task A_read_error_is_an_unreadable_list_and_a_lost_connection_stays_what_it_is()
    {
        await using var failing = new FailingStream(new IOException("Input/output error"));
        var ioError = await Assert.ThrowsAsync<BackupException>(() => BlockDigestList.ReadAsync(failing, MiB, null, "l", CancellationToken.None));
        Assert.Equal(ErrorIds.BackupSetUnreadable, ioError.ErrorId);
        Assert.Contains("Input/output error", ioError.Message, StringComparison.Ordinal);

        var lost = new BackupException(ErrorIds.SshConnectionLost, BackupErrorCategory.ConnectionError, "lost");
        await using var dropping = new FailingStream(lost);
        Assert.Same(lost, await Assert.ThrowsAsync<BackupException>(() => BlockDigestList.ReadAsync(dropping, MiB, null, "l", CancellationToken.None)));
    }

    /// <summary>Whatever the bytes, the answer is a list or a BackupException: thousands of random damages to a
    /// real list (bytes changed, cut short, lengthened), each parsed and read.</summary>
    [Fact]
    public async Task Any_damage_gives_a_list_or_a_backup_exception_never_another_exception()
    {
        var content = new byte[2 * Segment + 3 * 65536 + 7];
        new Random(3).NextBytes(content.AsSpan(0, MiB));
        var honest = Build(content, [(0, MiB)], twoThreads: false, MiB).Bytes.ToArray();
        var random = new Random(1515);
        int refused = 0, accepted = 0;

        for (var i = 0; i < 3000; i++)
        {
            var bytes = (byte[])honest.Clone();
            switch (i % 3)
            {
                case 0:
                    for (var n = random.Next(1, 4); n > 0; n--)
                        bytes[random.Next(random.Next(2) == 0 ? 40 : bytes.Length)] = (byte)random.Next(256);
                    break;
                case 1:
                    bytes = bytes[..random.Next(bytes.Length)];
                    break;
                default:
                    bytes = [.. bytes, .. new byte[random.Next(1, 100)]];
                    break;
            }
            var maxLength = random.Next(2) == 0 ? long.MaxValue : honest.Length;
            foreach (var attempt in new Func<Task<BlockDigestList>>[]
                     {
                         () => Task.FromResult(BlockDigestList.Parse(bytes, maxLength, null, "l")),
                         () => BlockDigestList.ReadAsync(new MemoryStream(bytes), maxLength, null, "l", CancellationToken.None),
                     })
            {
                try
                {
                    var list = await attempt();
                    Assert.Equal(BlockDigestList.SerializedLength(list.FileSize), list.Bytes.Length);
                    accepted++;
                }
                catch (BackupException ex) when (ex.ErrorId == ErrorIds.BackupSetUnreadable)
                {
                    refused++;
                }
            }
        }
        Assert.True(refused > 3000 && accepted > 300, $"refused {refused}, accepted {accepted}: both kinds of damage were tried");
    }

    // ------------------------------------------------------------------ helpers

    private static string Hex(ReadOnlySpan<byte> bytes) => Convert.ToHexString(bytes).ToLowerInvariant();

    private static byte[] Set(byte[] bytes, int offset, byte[] value)
    {
        value.CopyTo(bytes, offset);
        return bytes;
    }

    private static byte[] SetUInt32(byte[] bytes, int offset, uint value)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(offset), value);
        return bytes;
    }

    private static byte[] SetInt64(byte[] bytes, int offset, long value)
    {
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(offset), value);
        return bytes;
    }

    private static long ReadInt64(byte[] bytes, int offset) => BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(offset));

    /// <summary>Another file size with the counts that go with it: only the length gives the lie away.</summary>
    private static byte[] SetSize(byte[] bytes, long size)
    {
        BlockDigestList.WriteHeader(bytes, size);
        return bytes;
    }

    private static async Task<string> ShellAsync(string script, string file, long index)
    {
        var start = new ProcessStartInfo("sh", ["-c", script, "sh", file, index.ToString(CultureInfo.InvariantCulture)])
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        using var process = Process.Start(start)!;
        var output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.Equal(0, process.ExitCode);
        return output.Trim();
    }

    /// <summary>The given bytes, then zeros for ever.</summary>
    private sealed class EndlessStream(byte[] start) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get; set; }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            var count = buffer.Length;
            if (Position < start.Length)
            {
                count = Math.Min(count, start.Length - (int)Position);
                start.AsSpan((int)Position, count).CopyTo(buffer);
            }
            else
            {
                buffer.Clear();
            }
            Position += count;
            return count;
        }

        // Synchronous, so that the whole read runs on the test's thread, whose allocations the test counts.
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private sealed class FailingStream(Exception failure) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get; set; }
        public override int Read(byte[] buffer, int offset, int count) => throw failure;
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
