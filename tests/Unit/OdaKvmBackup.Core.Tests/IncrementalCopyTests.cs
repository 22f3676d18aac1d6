using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// SparseCopy's incremental copy (issue 15) on real files: the destination starts as a copy of the base (as a clone
/// would), the base's digest list is built from the base's bytes, the source is the base changed in known places. What
/// must hold: the copy ends byte-identical to the source, only the 64 KiB blocks that changed are written (whole),
/// a rotted base segment is written again, and the list returned is the source's.
/// </summary>
public sealed class IncrementalCopyTests : IDisposable
{
    private const int KiB = 1 << 10;
    private const int MiB = 1 << 20;
    private const int Block = 64 * KiB;
    private const long Segment = 16L * MiB;
    // Three segments and a short fourth one whose last block is short too.
    private const long Size = 3 * Segment + 100 * KiB + 1234;
    private readonly TempFolder _temp = new("incremental-copy-tests");

    public void Dispose() => _temp.Dispose();

    /// <summary>The base: data at the start, in segment 1, in segment 2 and in the short last segment; holes between.</summary>
    private static byte[] BaseContent()
    {
        var content = new byte[Size];
        var random = new Random(15);
        random.NextBytes(content.AsSpan(0, 2 * MiB));
        random.NextBytes(content.AsSpan(17 * MiB, 3 * MiB));
        random.NextBytes(content.AsSpan(40 * MiB, MiB));
        random.NextBytes(content.AsSpan((int)(3 * Segment), (int)(Size - 3 * Segment)));
        return content;
    }

    /// <summary>The base changed as a guest would: a byte, 8 KiB over two blocks, a block of data now zeros (a hole in
    /// the source), new data in a former hole, the last (short) block's last byte.</summary>
    private static byte[] ChangedContent(byte[] baseContent)
    {
        var content = (byte[])baseContent.Clone();
        content[MiB + 5] ^= 0xff;                                                // block 16
        new Random(16).NextBytes(content.AsSpan(18 * MiB - 4 * KiB, 8 * KiB));  // blocks 287 and 288
        content.AsSpan(40 * MiB, Block).Clear();                                 // block 640: zeros now
        new Random(17).NextBytes(content.AsSpan(30 * MiB + 3, 10));             // block 480: was a hole
        content[^1] ^= 0x01;                                                     // the last, short block
        return content;
    }

    /// <summary>The blocks whose bytes differ, found by comparing the bytes themselves.</summary>
    private static List<long> DifferingBlocks(byte[] a, byte[] b)
    {
        var blocks = new List<long>();
        for (long offset = 0; offset < a.Length; offset += Block)
        {
            var length = (int)Math.Min(Block, a.Length - offset);
            if (!a.AsSpan((int)offset, length).SequenceEqual(b.AsSpan((int)offset, length)))
                blocks.Add(offset / Block);
        }
        return blocks;
    }

    private static BlockDigestList ListOf(byte[] content)
    {
        using var builder = new BlockDigestListBuilder(content.Length);
        builder.Append(0, content);
        return builder.Complete();
    }

    /// <summary>Writes the content's non-zero 4 KiB blocks only: its zeros are holes.</summary>
    private static void WriteSparse(string path, byte[] content)
    {
        using var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write);
        RandomAccess.SetLength(handle, content.Length);
        for (var offset = 0; offset < content.Length; offset += 4 * KiB)
        {
            var block = content.AsSpan(offset, Math.Min(4 * KiB, content.Length - offset));
            if (block.IndexOfAnyExcept((byte)0) >= 0)
                RandomAccess.Write(handle, block, offset);
        }
    }

    private (string Base, string Source, string Clone) Files3(byte[] baseContent, byte[] sourceContent)
    {
        var basePath = _temp.Combine("base");
        var source = _temp.Combine("source");
        var clone = _temp.Combine("clone");
        WriteSparse(basePath, baseContent);
        WriteSparse(source, sourceContent);
        File.Copy(basePath, clone);
        return (basePath, source, clone);
    }

    private static async Task<CopyResult> CopyInto(string source, RecordingWriter writer, CopyBase? baseCopy, Action<CopyProgress>? progress = null)
    {
        await using (writer)
            return await SparseCopy.CopyAsync(source, writer, baseCopy, 0, progress, CancellationToken.None);
    }

    [Fact]
    public async Task Incremental_copy_into_a_clone_of_the_base_is_the_source_byte_for_byte()
    {
        var baseContent = BaseContent();
        var sourceContent = ChangedContent(baseContent);
        var (_, source, clone) = Files3(baseContent, sourceContent);

        var result = await CopyInto(source, new RecordingWriter(clone), new CopyBase(ListOf(baseContent), new HashSet<long>()));

        Assert.True(Support.Files.SameBytes(source, clone), "the copy differs from the source");
        Assert.Equal(Size, result.SizeBytes);
    }

    [Fact]
    public async Task Only_the_changed_64_KiB_blocks_are_written_each_whole()
    {
        var baseContent = BaseContent();
        var sourceContent = ChangedContent(baseContent);
        var (_, source, clone) = Files3(baseContent, sourceContent);
        var writer = new RecordingWriter(clone);

        var result = await CopyInto(source, writer, new CopyBase(ListOf(baseContent), new HashSet<long>()));

        var changed = DifferingBlocks(baseContent, sourceContent);
        Assert.Equal([16L, 287, 288, 480, 640, (Size - 1) / Block], changed); // the oracle itself: what ChangedContent did
        Assert.Equal(changed.Select(b => (b * Block, (int)Math.Min(Block, Size - b * Block))), writer.Writes.Select(w => (w.Offset, w.Length)).Order());
        Assert.Equal(writer.Writes.Sum(w => (long)w.Length), result.BytesSent);
        Assert.Equal(0, result.BytesResent);
    }

    [Fact]
    public async Task A_block_that_became_zeros_is_written_as_zeros()
    {
        var baseContent = BaseContent();
        var sourceContent = ChangedContent(baseContent);
        var (_, source, clone) = Files3(baseContent, sourceContent);
        var writer = new RecordingWriter(clone);

        await CopyInto(source, writer, new CopyBase(ListOf(baseContent), new HashSet<long>()));

        var zeroed = Assert.Single(writer.Writes, w => w.Offset == 640L * Block);
        Assert.Equal(Block, zeroed.Length);
        Assert.True(zeroed.AllZero, "block 640 was written with data");
        using var stream = File.OpenRead(clone);
        stream.Position = 640L * Block;
        var bytes = new byte[Block];
        stream.ReadExactly(bytes);
        Assert.True(bytes.AsSpan().IndexOfAnyExcept((byte)0) < 0, "block 640 of the copy still holds the base's data");
    }

    [Fact]
    public async Task A_rotted_base_segment_is_written_again_whole_and_counted_as_resent()
    {
        var baseContent = BaseContent();
        var sourceContent = ChangedContent(baseContent);
        var (_, source, clone) = Files3(baseContent, sourceContent);
        // The base copy rotted in segment 2, in a block the guest never changed: its list still says what it held.
        using (var stream = new FileStream(clone, FileMode.Open, FileAccess.ReadWrite))
        {
            stream.Position = 40 * MiB + 7 * Block + 9;
            stream.WriteByte(0x42);
        }
        var writer = new RecordingWriter(clone);

        var result = await CopyInto(source, writer, new CopyBase(ListOf(baseContent), new HashSet<long> { 2 }));

        Assert.True(Support.Files.SameBytes(source, clone), "the copy inherited the base's rot");
        var segment2 = Enumerable.Range(512, 256).Select(b => (long)b * Block).ToList();
        Assert.Equal(segment2, writer.Writes.Select(w => w.Offset).Where(o => o >= 2 * Segment && o < 3 * Segment).Order());
        // Block 640 (in segment 2) changed: it is sent, not re-sent; the other 255 are re-sent only because of the rot.
        Assert.Equal(255L * Block, result.BytesResent);
        Assert.Equal(writer.Writes.Sum(w => (long)w.Length), result.BytesSent);
    }

    [Fact]
    public async Task The_list_returned_is_the_sources_and_the_copys()
    {
        var baseContent = BaseContent();
        var sourceContent = ChangedContent(baseContent);
        var (_, source, clone) = Files3(baseContent, sourceContent);

        var result = await CopyInto(source, new RecordingWriter(clone), new CopyBase(ListOf(baseContent), new HashSet<long>()));

        Assert.Equal(ListOf(sourceContent).Sha256, result.Digests.Sha256);
        Assert.Equal(result.Digests.Sha256, (await SparseCopy.DigestListAsync(clone, null, CancellationToken.None)).Sha256);
        Assert.NotEqual(ListOf(baseContent).Sha256, result.Digests.Sha256);
    }

    [Fact]
    public async Task Full_copy_returns_the_sources_list_and_writes_only_data()
    {
        var sourceContent = ChangedContent(BaseContent());
        var source = _temp.Combine("source");
        WriteSparse(source, sourceContent);
        var copy = _temp.Combine("copy");
        File.WriteAllBytes(copy, []);
        var writer = new RecordingWriter(copy);
        var reports = new List<CopyProgress>();

        var result = await CopyInto(source, writer, null, reports.Add);

        Assert.True(Support.Files.SameBytes(source, copy), "the copy differs from the source");
        Assert.Equal(ListOf(sourceContent).Sha256, result.Digests.Sha256);
        Assert.Equal(result.Digests.Sha256, (await SparseCopy.DigestListAsync(copy, null, CancellationToken.None)).Sha256);
        Assert.All(writer.Writes, w => Assert.False(w.AllZero));
        Assert.Equal(result.DataBytes, result.BytesSent);
        Assert.Equal(writer.Writes.Sum(w => (long)w.Length), result.BytesSent);
        Assert.InRange(result.BytesRead, result.DataBytes, Size - 20 * MiB); // the holes were not read
        Assert.Equal(new CopyProgress(Size, result.BytesSent, Size), reports[^1]);
        Assert.Equal(reports.Select(r => r.Compared).Order(), reports.Select(r => r.Compared));
    }

    /// <summary>The blocks of <paramref name="source"/> that must be written into a clone of <paramref name="baseContent"/>
    /// of another size, found from the bytes: a block whose bytes differ, or that the base does not hold whole at the
    /// same length (a block past the base's end, the base's short last block, the source's short last block).</summary>
    private static List<long> BlocksToWrite(byte[] baseContent, byte[] source)
    {
        var blocks = new List<long>();
        for (long offset = 0; offset < source.Length; offset += Block)
        {
            var length = (int)Math.Min(Block, source.Length - offset);
            var baseLength = (int)Math.Clamp(baseContent.Length - offset, 0, Block);
            if (length != baseLength || !source.AsSpan((int)offset, length).SequenceEqual(baseContent.AsSpan((int)offset, length)))
                blocks.Add(offset / Block);
        }
        return blocks;
    }

    [Fact]
    public async Task A_source_longer_than_the_base_is_copied_into_its_clone_byte_for_byte_writing_only_the_changed_and_new_blocks()
    {
        // A qcow2 file the guest wrote to grows by new clusters: here 64 KiB + 4 KiB of new data past the base's end.
        var baseContent = BaseContent();
        var sourceContent = new byte[Size + Block + 4 * KiB];
        ChangedContent(baseContent).CopyTo(sourceContent, 0);
        new Random(18).NextBytes(sourceContent.AsSpan((int)Size));
        var (basePath, source, clone) = Files3(baseContent, sourceContent);
        var baseBytes = File.ReadAllBytes(basePath);
        var writer = new RecordingWriter(clone);

        var result = await CopyInto(source, writer, new CopyBase(ListOf(baseContent), new HashSet<long>()));

        Assert.True(Support.Files.SameBytes(source, clone), "the copy differs from the source");
        var last = (sourceContent.Length - 1L) / Block;
        var toWrite = BlocksToWrite(baseContent, sourceContent);
        // The oracle: ChangedContent's blocks (the base's short last block 769 among them), and the new block 770.
        Assert.Equal([16L, 287, 288, 480, 640, 769, 770], toWrite);
        Assert.Equal(770, last);
        // Sorted: two threads write, in no promised order.
        Assert.Equal(toWrite.Select(b => (b * Block, (int)Math.Min(Block, sourceContent.Length - b * Block))), writer.Writes.Select(w => (w.Offset, w.Length)).OrderBy(w => w.Offset));
        Assert.Equal(writer.Writes.Sum(w => (long)w.Length), result.BytesSent);
        Assert.Equal(0, result.BytesResent);
        Assert.Equal(sourceContent.Length, result.SizeBytes);
        Assert.Equal(ListOf(sourceContent).Sha256, result.Digests.Sha256);
        Assert.Equal(baseBytes, File.ReadAllBytes(basePath)); // the base itself is only read
    }

    [Fact]
    public async Task A_source_shorter_than_the_base_is_copied_into_its_clone_byte_for_byte_writing_only_the_changed_blocks()
    {
        // 64 KiB + 4 KiB shorter: the source's last block (768) is short, the base's was whole; block 769 is gone.
        var baseContent = BaseContent();
        var sourceContent = ChangedContent(baseContent).AsSpan(0, (int)(Size - Block - 4 * KiB)).ToArray();
        var (_, source, clone) = Files3(baseContent, sourceContent);
        var writer = new RecordingWriter(clone);

        var result = await CopyInto(source, writer, new CopyBase(ListOf(baseContent), new HashSet<long>()));

        Assert.True(Support.Files.SameBytes(source, clone), "the copy differs from the source");
        Assert.Equal(sourceContent.Length, new FileInfo(clone).Length);
        var toWrite = BlocksToWrite(baseContent, sourceContent);
        Assert.Equal([16L, 287, 288, 480, 640, 768], toWrite);
        // Sorted: two threads write, in no promised order.
        Assert.Equal(toWrite.Select(b => (b * Block, (int)Math.Min(Block, sourceContent.Length - b * Block))), writer.Writes.Select(w => (w.Offset, w.Length)).OrderBy(w => w.Offset));
        Assert.Equal(writer.Writes.Sum(w => (long)w.Length), result.BytesSent);
        Assert.Equal(ListOf(sourceContent).Sha256, result.Digests.Sha256);
    }

    // A segment whose blocks all match the base's takes the base's segment digest (hashed once, not twice), but only
    // where the base's segment is as long: a source cut short on a block boundary holds the same whole blocks as the
    // base there, not the same segment.
    [Fact]
    public async Task A_source_cut_short_on_a_block_boundary_gets_its_own_last_segment_digest()
    {
        var baseContent = BaseContent();
        var sourceContent = baseContent.AsSpan(0, (int)(3 * Segment + Block)).ToArray();
        var (_, source, clone) = Files3(baseContent, sourceContent);

        var result = await CopyInto(source, new RecordingWriter(clone), new CopyBase(ListOf(baseContent), new HashSet<long>()));

        Assert.True(Support.Files.SameBytes(source, clone), "the copy differs from the source");
        Assert.Equal(0, result.BytesSent);
        Assert.Equal(ListOf(sourceContent).Sha256, result.Digests.Sha256);
    }

    // A fragmented file: every other 4 KiB block holds data, the rest are holes, so each segment has as many extents.
    // An incremental copy holds a segment's chunks while its blocks all match the base, and hashes them for the
    // segment once one differs: unchanged and changed segments alike get the source's digests, and the copy ends.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_fragmented_source_is_copied_incrementally_with_its_own_list(bool changed)
    {
        var baseContent = new byte[2 * Segment + 3 * Block];
        var random = new Random(21);
        for (var offset = 0; offset < baseContent.Length; offset += 8 * KiB)
            random.NextBytes(baseContent.AsSpan(offset, 4 * KiB));
        var sourceContent = (byte[])baseContent.Clone();
        if (changed)
            sourceContent[Segment + 5 * Block + 7] ^= 0xff;
        var (_, source, clone) = Files3(baseContent, sourceContent);

        var result = await CopyInto(source, new RecordingWriter(clone), new CopyBase(ListOf(baseContent), new HashSet<long>())).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.True(Support.Files.SameBytes(source, clone), "the copy differs from the source");
        Assert.Equal(changed ? Block : 0, result.BytesSent);
        Assert.Equal(ListOf(sourceContent).Sha256, result.Digests.Sha256);
    }

    [Fact]
    public void A_short_last_block_is_written_when_the_sizes_differ_even_if_its_digest_equals_the_bases()
    {
        // Digests of 6 bytes are hints: a short block and a whole one are never taken as equal, whatever they say.
        var baseList = ListOf(BaseContent());
        var baseLast = baseList.BlockCount - 1; // 769, short

        // The base's short last block, in a longer source; the source's short last block (768), once whole in the base;
        // a block past the base's end.
        Assert.True(SparseCopy.BlockDiffers(baseList, Size + Block, baseLast, baseList.BlockDigest(baseLast)));
        Assert.True(SparseCopy.BlockDiffers(baseList, Size - Block, baseLast - 1, baseList.BlockDigest(baseLast - 1)));
        Assert.True(SparseCopy.BlockDiffers(baseList, Size + Block, baseLast + 1, baseList.BlockDigest(baseLast)));
        // Whole blocks in both, or the same size: the digests decide, as before.
        Assert.False(SparseCopy.BlockDiffers(baseList, Size, baseLast, baseList.BlockDigest(baseLast)));
        Assert.False(SparseCopy.BlockDiffers(baseList, Size + Block, 5, baseList.BlockDigest(5)));
        Assert.True(SparseCopy.BlockDiffers(baseList, Size + Block, 5, baseList.BlockDigest(6)));
    }

    // Segments are digested by two threads at once, in whatever order they finish: on a file of many segments with
    // data and changes scattered at random, the copy and its list must still be exactly the source's.
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Scattered_changes_over_many_segments_give_the_source_and_its_list(int seed)
    {
        var random = new Random(seed);
        var baseContent = new byte[9 * Segment - 3 * KiB];
        for (var i = 0; i < 40; i++)
            random.NextBytes(baseContent.AsSpan(random.Next(baseContent.Length - MiB), random.Next(1, MiB)));
        var sourceContent = (byte[])baseContent.Clone();
        for (var i = 0; i < 200; i++)
        {
            var at = random.Next(sourceContent.Length - 8 * KiB);
            if (i % 5 == 0)
                sourceContent.AsSpan(at, 8 * KiB).Clear();
            else
                random.NextBytes(sourceContent.AsSpan(at, 8 * KiB));
        }
        var (_, source, clone) = Files3(baseContent, sourceContent);
        var writer = new RecordingWriter(clone);

        var result = await CopyInto(source, writer, new CopyBase(ListOf(baseContent), new HashSet<long>()));

        Assert.True(Support.Files.SameBytes(source, clone), "the copy differs from the source");
        Assert.Equal(ListOf(sourceContent).Sha256, result.Digests.Sha256);
        Assert.Equal(DifferingBlocks(baseContent, sourceContent).Select(b => b * Block), writer.Writes.Select(w => w.Offset).Order());
    }

    // A server that fails a write (disk full, connection lost for good) must fail the copy with its own error, which
    // names the cause, not with the cancellation that stopped the other threads.
    [Fact]
    public async Task A_write_that_fails_during_an_incremental_copy_fails_it_with_that_error()
    {
        var baseContent = BaseContent();
        var sourceContent = ChangedContent(baseContent);
        var (_, source, clone) = Files3(baseContent, sourceContent);
        var writer = new RecordingWriter(clone) { FailAfter = 2 };

        var error = await Assert.ThrowsAsync<IOException>(() => CopyInto(source, writer, new CopyBase(ListOf(baseContent), new HashSet<long>())));

        Assert.Equal("No space left on device", error.Message);
    }

    /// <summary>Writes into an existing file without truncating it (as a store's OpenForWriteAsync does) and records
    /// each write: where, how long, whether it was all zeros.</summary>
    private sealed class RecordingWriter(string path) : IStoreFileWriter
    {
        private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);

        public List<(long Offset, int Length, bool AllZero)> Writes { get; } = [];

        /// <summary>Writes that succeed before every further one fails.</summary>
        public int FailAfter { get; init; } = int.MaxValue;

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
        {
            lock (Writes)
            {
                if (Writes.Count >= FailAfter)
                    throw new IOException("No space left on device");
                Writes.Add((offset, data.Length, data.Span.IndexOfAnyExcept((byte)0) < 0));
            }
            RandomAccess.Write(_handle, data.Span, offset);
            return ValueTask.CompletedTask;
        }

        public Task CompleteAsync(long size, CancellationToken ct)
        {
            RandomAccess.SetLength(_handle, size);
            return Task.CompletedTask;
        }

        public ValueTask DisposeAsync()
        {
            _handle.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
