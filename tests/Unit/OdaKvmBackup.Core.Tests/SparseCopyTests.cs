using System.Diagnostics;
using System.Globalization;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>SparseCopy on real files in the temp folder (ext4 or tmpfs: both know SEEK_DATA/SEEK_HOLE), writing
/// through a LocalBackupStore's writer as Copy-VmDisk does.</summary>
public sealed class SparseCopyTests : IDisposable
{
    private const int MiB = 1 << 20;
    private readonly TempFolder _temp = new("sparsecopy-tests");

    public void Dispose() => _temp.Dispose();

    /// <summary>Copies into <paramref name="copy"/> through the writer of a store rooted at its folder.</summary>
    private static async Task<CopyResult> CopyTo(string source, string copy, long bandwidth, Action<long, long>? progress, CancellationToken ct)
    {
        var store = new LocalBackupStore(Path.GetDirectoryName(copy)!);
        await using var writer = await store.CreateFileAsync(Path.GetFileName(copy), ct);
        return await SparseCopy.CopyAsync(source, writer, null, bandwidth, progress is null ? null : p => progress(p.Compared, p.Total), ct,
            legacyContentDigest: true);
    }

    [Fact]
    public async Task A_bandwidth_limit_holds_and_a_stop_ends_the_throttled_copy_at_once()
    {
        var source = _temp.Combine("throttled");
        WriteFile(source, 24L * MiB, [(0, 24 * MiB)], allocateZeros: false);

        // 8 MiB/s: the 24 MiB take at least 3 s (read ahead or not, a chunk is handed on only when its time came).
        var watch = Stopwatch.StartNew();
        var result = await CopyTo(source, _temp.Combine("limited"), 8L * MiB, null, CancellationToken.None);
        Assert.Equal(24L * MiB, result.BytesRead);
        Assert.True(watch.Elapsed.TotalSeconds > 2.7, $"24 MiB at 8 MiB/s took {watch.Elapsed.TotalSeconds:0.00} s");

        // 1 MiB/s would take 24 s: stopped after 1 s, it ends within a few seconds, without a copy.
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        watch.Restart();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => CopyTo(source, _temp.Combine("stopped"), 1L * MiB, null, stop.Token));
        Assert.True(watch.Elapsed.TotalSeconds < 6, $"the stopped copy went on for {watch.Elapsed.TotalSeconds:0.00} s");
    }

    [Fact]
    public async Task Sparse_file_is_copied_byte_for_byte_and_stays_sparse()
    {
        var source = _temp.Combine("linux_boot");
        var data = new (long Offset, int Length)[] { (0, 4096), (10L * MiB + 123, 4096), (40L * MiB - 100, 4096), (64L * MiB - 10, 10) };
        WriteFile(source, 64L * MiB, data, allocateZeros: false);
        var copy = _temp.Combine("copy");

        var result = await CopyTo(source, copy, 0, null, CancellationToken.None);

        AssertSameBytes(source, copy);
        Assert.Equal(64L * MiB, result.SizeBytes);
        // 4 KiB blocks: one at 0, two for each write that straddles a block boundary (10 MiB + 123, 40 MiB - 100), one at the end.
        Assert.Equal(6L * 4096, result.DataBytes);
        Assert.True(AllocatedBytes(copy) <= 1L * MiB, $"the copy allocates {AllocatedBytes(copy)} bytes");
    }

    [Fact]
    public async Task Fully_allocated_file_that_is_mostly_zeros_becomes_a_sparse_copy_with_the_same_bytes()
    {
        var source = _temp.Combine("disco_secundario");
        WriteFile(source, 32L * MiB, [(5L * MiB, 4096), (20L * MiB + 7, 100), (32L * MiB - 1, 1)], allocateZeros: true);
        var copy = _temp.Combine("copy");
        Assert.True(AllocatedBytes(source) >= 32L * MiB, "precondition: the source is fully allocated");

        var result = await CopyTo(source, copy, 0, null, CancellationToken.None);

        AssertSameBytes(source, copy);
        Assert.Equal(3L * 4096, result.DataBytes); // one 4 KiB block per write
        Assert.True(AllocatedBytes(copy) * 8 < AllocatedBytes(source),
            $"the copy allocates {AllocatedBytes(copy)} bytes, the source {AllocatedBytes(source)}");
    }

    [Fact]
    public async Task Digest_of_the_source_equals_the_digest_of_its_copy_and_the_copy_result()
    {
        var source = _temp.Combine("a.qcow2");
        WriteFile(source, 20L * MiB, [(0, 65536), (15L * MiB, 3)], allocateZeros: true);
        var copy = _temp.Combine("copy");

        var result = await CopyTo(source, copy, 0, null, CancellationToken.None);
        var ofSource = await SparseCopy.DigestAsync(source, null, CancellationToken.None);
        var ofCopy = await SparseCopy.DigestAsync(copy, null, CancellationToken.None);

        Assert.Equal(ofSource.ContentDigest, result.ContentDigest);
        Assert.Equal(ofSource.ContentDigest, ofCopy.ContentDigest);
        Assert.Matches("^[0-9a-f]{64}$", result.ContentDigest);
        Assert.Equal(ofSource.DataBytes, ofCopy.DataBytes);
    }

    [Fact]
    public async Task Sparse_and_fully_allocated_files_with_the_same_bytes_have_the_same_digest()
    {
        var sparse = _temp.Combine("sparse");
        var full = _temp.Combine("full");
        (long, int)[] data = [(3L * MiB + 5, 9000), (9L * MiB, 1)];
        WriteFile(sparse, 12L * MiB, data, allocateZeros: false);
        WriteFile(full, 12L * MiB, data, allocateZeros: true);

        var a = await SparseCopy.DigestAsync(sparse, null, CancellationToken.None);
        var b = await SparseCopy.DigestAsync(full, null, CancellationToken.None);

        Assert.Equal(a.ContentDigest, b.ContentDigest);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(1L * MiB - 1)]
    [InlineData(1L * MiB)]
    [InlineData(7L * MiB + 4095)]
    public async Task Digest_changes_when_one_byte_changes(long offset)
    {
        var path = _temp.Combine("disk");
        WriteFile(path, 8L * MiB, [(0, 4096), (7L * MiB, 8192)], allocateZeros: false);
        var before = await SparseCopy.DigestAsync(path, null, CancellationToken.None);

        using (var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite))
        {
            stream.Position = offset;
            var old = stream.ReadByte();
            stream.Position = offset;
            stream.WriteByte((byte)(old ^ 0x01));
        }
        var after = await SparseCopy.DigestAsync(path, null, CancellationToken.None);

        Assert.NotEqual(before.ContentDigest, after.ContentDigest);
    }

    [Fact]
    public async Task Digest_tells_apart_the_same_data_at_another_offset()
    {
        var a = _temp.Combine("a");
        var b = _temp.Combine("b");
        var block = Enumerable.Range(1, 4096).Select(i => (byte)i).ToArray();
        WriteBytes(a, 4L * MiB, (0, block));
        WriteBytes(b, 4L * MiB, (2L * MiB, block));

        Assert.NotEqual((await SparseCopy.DigestAsync(a, null, CancellationToken.None)).ContentDigest,
            (await SparseCopy.DigestAsync(b, null, CancellationToken.None)).ContentDigest);
    }

    [Fact]
    public async Task Digest_tells_apart_files_that_differ_only_in_trailing_zeros()
    {
        var a = _temp.Combine("a");
        var b = _temp.Combine("b");
        WriteFile(a, 2L * MiB, [(0, 100)], allocateZeros: false);
        File.Copy(a, b);
        using (var stream = new FileStream(b, FileMode.Open))
            stream.SetLength(3L * MiB);

        Assert.NotEqual((await SparseCopy.DigestAsync(a, null, CancellationToken.None)).ContentDigest,
            (await SparseCopy.DigestAsync(b, null, CancellationToken.None)).ContentDigest);
    }

    [Fact]
    public async Task Size_that_is_not_a_multiple_of_the_chunk_is_copied_exactly()
    {
        var source = _temp.Combine("odd");
        WriteFile(source, 5L * MiB + 17, [(2L * MiB + 1, 50), (5L * MiB, 17)], allocateZeros: false);
        var copy = _temp.Combine("copy");

        var result = await CopyTo(source, copy, 0, null, CancellationToken.None);

        AssertSameBytes(source, copy);
        Assert.Equal(5L * MiB + 17, result.SizeBytes);
        Assert.Equal((await SparseCopy.DigestAsync(copy, null, CancellationToken.None)).ContentDigest, result.ContentDigest);
    }

    [Fact]
    public async Task File_of_only_zeros_is_copied_as_a_hole_of_the_same_size()
    {
        var source = _temp.Combine("zeros");
        WriteFile(source, 8L * MiB, [], allocateZeros: true);
        var copy = _temp.Combine("copy");

        var result = await CopyTo(source, copy, 0, null, CancellationToken.None);

        Assert.Equal(8L * MiB, new FileInfo(copy).Length);
        Assert.Equal(0, result.DataBytes);
        Assert.True(AllocatedBytes(copy) < MiB);
        AssertSameBytes(source, copy);
    }

    [Fact]
    public async Task Empty_file_gives_an_empty_copy()
    {
        var source = _temp.Combine("empty");
        File.WriteAllBytes(source, []);
        var copy = _temp.Combine("copy");

        var result = await CopyTo(source, copy, 0, null, CancellationToken.None);

        Assert.Equal(0, new FileInfo(copy).Length);
        Assert.Equal(0, result.SizeBytes);
    }

    [Fact]
    public async Task Block_device_is_copied_whole_not_as_an_empty_file()
    {
        // A block disk (type='block', e.g. an LV) is backed up with -OverlayDirectory or cold. Its stat size is 0:
        // only the device's own size tells how much there is to copy.
        var image = _temp.Combine("lv.img");
        WriteFile(image, 8L * MiB, [(MiB, 4096), (8L * MiB - 100, 100)], allocateZeros: false);
        using var device = LoopDevice.Attach(image);
        var copy = _temp.Combine("copy");

        var result = await CopyTo(device.Path, copy, 0, null, CancellationToken.None);

        Assert.Equal(8L * MiB, result.SizeBytes);
        AssertSameBytes(image, copy);
        Assert.Equal((await SparseCopy.DigestAsync(image, null, CancellationToken.None)).ContentDigest,
            (await SparseCopy.DigestAsync(device.Path, null, CancellationToken.None)).ContentDigest);
    }

    [Fact]
    public async Task Progress_ends_at_the_full_size_and_never_goes_back()
    {
        var source = _temp.Combine("src");
        WriteFile(source, 6L * MiB + 3, [(0, 10), (3L * MiB, 10), (6L * MiB, 3)], allocateZeros: true);
        var reports = new List<(long Done, long Total)>();

        await CopyTo(source, _temp.Combine("copy"), 0, (done, total) => reports.Add((done, total)), CancellationToken.None);

        Assert.NotEmpty(reports);
        Assert.Equal((6L * MiB + 3, 6L * MiB + 3), reports[^1]);
        Assert.All(reports, r => Assert.Equal(6L * MiB + 3, r.Total));
        Assert.Equal(reports.Select(r => r.Done).Order(), reports.Select(r => r.Done));
    }

    [Fact]
    public async Task Cancelled_copy_throws_OperationCanceledException()
    {
        var source = _temp.Combine("src");
        WriteFile(source, 4L * MiB, [(0, 10)], allocateZeros: true);
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => CopyTo(source, _temp.Combine("copy"), 0, null, cts.Token));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => SparseCopy.DigestAsync(source, null, cts.Token));
    }

    [Fact]
    public async Task Cancelling_a_throttled_copy_stops_it_promptly()
    {
        var source = _temp.Combine("src");
        WriteRandom(source, 16L * MiB);
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var clock = Stopwatch.StartNew();

        // 16 MiB at 2 MiB/s would take 8 s.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => CopyTo(source, _temp.Combine("copy"), 2L * MiB, null, cts.Token));

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3), $"stopping took {clock.Elapsed}");
    }

    [Fact]
    public async Task Bandwidth_limit_slows_the_copy()
    {
        var source = _temp.Combine("src");
        WriteRandom(source, 4L * MiB);
        var copy = _temp.Combine("copy");
        var clock = Stopwatch.StartNew();

        await CopyTo(source, copy, 8L * MiB, null, CancellationToken.None);

        // 4 MiB at 8 MiB/s: at least half a second (0.4 s leaves room for timer granularity).
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(0.4), $"the copy took only {clock.Elapsed}");
        AssertSameBytes(source, copy);
    }

    private static void WriteFile(string path, long size, IEnumerable<(long Offset, int Length)> data, bool allocateZeros)
    {
        var random = new Random(42);
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        if (allocateZeros)
        {
            var zeros = new byte[MiB];
            for (long written = 0; written < size; written += MiB)
                stream.Write(zeros, 0, (int)Math.Min(MiB, size - written));
        }
        else
        {
            stream.SetLength(size);
        }
        foreach (var (offset, length) in data)
        {
            var bytes = new byte[length];
            random.NextBytes(bytes);
            for (var i = 0; i < bytes.Length; i++)
                bytes[i] |= 1; // never zero, so every written byte counts as data
            stream.Position = offset;
            stream.Write(bytes);
        }
        stream.Flush(flushToDisk: true);
    }

    private static void WriteBytes(string path, long size, params (long Offset, byte[] Bytes)[] data)
    {
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        stream.SetLength(size);
        foreach (var (offset, bytes) in data)
        {
            stream.Position = offset;
            stream.Write(bytes);
        }
    }

    private static void WriteRandom(string path, long size)
    {
        var bytes = new byte[size];
        new Random(7).NextBytes(bytes);
        bytes[0] = 1;
        File.WriteAllBytes(path, bytes);
    }

    private static void AssertSameBytes(string expectedPath, string actualPath)
    {
        Assert.Equal(new FileInfo(expectedPath).Length, new FileInfo(actualPath).Length);
        using var a = File.OpenRead(expectedPath);
        using var b = File.OpenRead(actualPath);
        var x = new byte[MiB];
        var y = new byte[MiB];
        for (long offset = 0; ; offset += MiB)
        {
            var n = a.ReadAtLeast(x, MiB, throwOnEndOfStream: false);
            var m = b.ReadAtLeast(y, MiB, throwOnEndOfStream: false);
            Assert.Equal(n, m);
            if (!x.AsSpan(0, n).SequenceEqual(y.AsSpan(0, m)))
                Assert.Fail($"'{actualPath}' differs from '{expectedPath}' in the MiB at {offset}");
            if (n < MiB)
                return;
        }
    }

    /// <summary>What the file system really allocated: `stat -c %b` (512-byte blocks).</summary>
    private static long AllocatedBytes(string path)
    {
        var start = new ProcessStartInfo("stat", ["-c", "%b", path]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.Equal(0, process.ExitCode);
        return long.Parse(output.Trim(), CultureInfo.InvariantCulture) * 512;
    }
}
