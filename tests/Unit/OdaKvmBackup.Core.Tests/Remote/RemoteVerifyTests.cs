using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>
/// Test-KvmBackup of a set on an SSH server reads each copy back on the server. Segments that held data are
/// compared with their digests; segments that held only zeros (no digest in the manifest) must still read as
/// zeros there: a server that put data into a hole is caught, and nothing is read over the network for it.
/// </summary>
[Collection(SshServerCollection.Name)]
public sealed class RemoteVerifyTests
{
    private const int MiB = 1 << 20;
    private readonly TestSshServer _server;

    public RemoteVerifyTests(SshServerFixture fixture) => _server = fixture.Server;

    /// <summary>A 5 MiB copy on the server with data in its 1 MiB segments 0 and 3 only, and its manifest entry.</summary>
    private static async Task<ManifestDisk> CopyOnServerAsync(string path, bool anyData = true)
    {
        var content = new byte[5 * MiB];
        if (anyData)
        {
            RandomNumberGenerator.Fill(content.AsSpan(0, 4096));
            RandomNumberGenerator.Fill(content.AsSpan(3 * MiB + 100, 5000));
        }
        await using (var file = File.Create(path))
        {
            file.SetLength(content.Length);
            foreach (var (offset, length) in new[] { (0, 4096), (3 * MiB + 100, 5000) })
            {
                file.Position = offset;
                file.Write(content, offset, length);
            }
        }
        var digest = await SparseCopy.DigestAsync(path, null, CancellationToken.None);
        var segments = new SortedDictionary<long, string>();
        for (var i = 0; i < 5; i++)
        {
            if (content.AsSpan(i * MiB, MiB).ContainsAnyExcept((byte)0))
                segments[i] = Convert.ToHexStringLower(SHA256.HashData(content.AsSpan(i * MiB, MiB)));
        }
        return new ManifestDisk
        {
            Target = "vdb", Source = "/vms/vm/data", Format = "raw", File = "data", SizeBytes = digest.SizeBytes, DataBytes = digest.DataBytes,
            ContentDigest = digest.ContentDigest, SegmentSize = MiB, SegmentDigests = segments, Verified = true,
        };
    }

    private static VerifyService Verify(RecordingSink? sink = null) =>
        new(new QemuImgClient(new FakeRunner(_ => throw new InvalidOperationException("qemu-img does not run for a remote copy"))), sink ?? new RecordingSink());

    private static void PlantByte(string path, long offset)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        RandomAccess.Write(handle, new byte[] { 0x5A }, offset);
    }

    [Fact]
    public async Task A_good_copy_passes_with_its_zero_segments_read_as_zeros_on_the_server()
    {
        var root = _server.DataFolder(nameof(A_good_copy_passes_with_its_zero_segments_read_as_zeros_on_the_server));
        var disk = await CopyOnServerAsync(Path.Combine(root, "data"));
        await using var store = _server.Store("good", root);

        var (check, problem, missing) = await Verify().ReadBackAsync(store, "data", disk, CancellationToken.None);

        Assert.Null(problem);
        Assert.False(missing);
        Assert.Contains("2 segment digests", check, StringComparison.Ordinal);
        Assert.Contains("3 segments of zeros", check, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Data_the_server_put_into_a_segment_of_zeros_is_caught_and_named()
    {
        var root = _server.DataFolder(nameof(Data_the_server_put_into_a_segment_of_zeros_is_caught_and_named));
        var disk = await CopyOnServerAsync(Path.Combine(root, "data"));
        PlantByte(Path.Combine(root, "data"), 2L * MiB + 12345);
        await using var store = _server.Store("good", root);

        var (_, problem, _) = await Verify().ReadBackAsync(store, "data", disk, CancellationToken.None);

        Assert.NotNull(problem);
        Assert.Contains("segment 2", problem, StringComparison.Ordinal);
        Assert.Contains("zeros", problem, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_copy_of_zeros_only_is_checked_on_the_server_too_not_read_over_the_network()
    {
        var root = _server.DataFolder(nameof(A_copy_of_zeros_only_is_checked_on_the_server_too_not_read_over_the_network));
        var disk = await CopyOnServerAsync(Path.Combine(root, "data"), anyData: false);
        Assert.Empty(disk.SegmentDigests!);
        PlantByte(Path.Combine(root, "data"), 4L * MiB + 1);
        var sink = new RecordingSink();
        await using var store = _server.Store("good", root);

        var (_, problem, _) = await Verify(sink).ReadBackAsync(store, "data", disk, CancellationToken.None);

        Assert.NotNull(problem);
        Assert.Contains("segment 4", problem, StringComparison.Ordinal);
        Assert.DoesNotContain(sink.Warnings, w => w.Contains("over the network", StringComparison.Ordinal));
    }
}

/// <summary>Which bytes of a copy must read as zeros: every segment without a digest, runs of them joined.</summary>
public sealed class ZeroRangeTests
{
    [Theory]
    [InlineData(100, 10, new long[] { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, "")]
    [InlineData(100, 10, new long[] { }, "0+100")]
    [InlineData(95, 10, new long[] { 0, 3, 4 }, "10+20 50+45")]         // the last segment is short
    [InlineData(100, 10, new long[] { 9, 2, 2, 0 }, "10+10 30+60")]      // in any order, once each
    [InlineData(100, 10, new long[] { -1, 5, 10, long.MaxValue / 4 }, "0+50 60+40")] // a manifest's impossible indexes name no range
    public void Segments_without_a_digest_become_ranges_to_check(long size, long segmentSize, long[] dataSegments, string expected)
    {
        var ranges = OdaKvmBackup.Core.Copies.RemoteCopyCheck.ZeroRanges(dataSegments, size, segmentSize);

        Assert.Equal(expected, string.Join(' ', ranges.Select(r => $"{r.Offset}+{r.Length}")));
    }
}
