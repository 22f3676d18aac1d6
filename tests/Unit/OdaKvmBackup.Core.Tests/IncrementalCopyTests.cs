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
        Assert.Equal(changed.Select(b => (b * Block, (int)Math.Min(Block, Size - b * Block))), writer.Writes.Select(w => (w.Offset, w.Length)));
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
        Assert.Equal(segment2, writer.Writes.Select(w => w.Offset).Where(o => o >= 2 * Segment && o < 3 * Segment));
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

    [Fact]
    public async Task A_source_of_another_size_than_the_base_is_refused_and_nothing_is_written()
    {
        var baseContent = BaseContent();
        var sourceContent = new byte[Size + 1];
        baseContent.CopyTo(sourceContent, 0);
        var (_, source, clone) = Files3(baseContent, sourceContent);
        var writer = new RecordingWriter(clone);

        await Assert.ThrowsAsync<ArgumentException>(() => CopyInto(source, writer, new CopyBase(ListOf(baseContent), new HashSet<long>())));

        Assert.Empty(writer.Writes);
        Assert.True(Support.Files.SameBytes(_temp.Combine("base"), clone), "the clone was changed");
    }

    /// <summary>Writes into an existing file without truncating it (as a store's OpenForWriteAsync does) and records
    /// each write: where, how long, whether it was all zeros.</summary>
    private sealed class RecordingWriter(string path) : IStoreFileWriter
    {
        private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);

        public List<(long Offset, int Length, bool AllZero)> Writes { get; } = [];

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
        {
            lock (Writes)
                Writes.Add((offset, data.Length, data.Span.IndexOfAnyExcept((byte)0) < 0));
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
