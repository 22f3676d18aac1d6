using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>
/// A copy read back on the server against its block digest list (<see cref="RemoteCopyCheck"/>), with the real sshd:
/// what differs is named with the digests or the first byte of data, and no more commands run than the check needs
/// (each costs a round trip to the server).
/// </summary>
[Collection(SshServerCollection.Name)]
public sealed class RemoteCopyCheckTests
{
    private const long MiB = 1 << 20;
    private const long Size = 5 * BlockDigestList.SegmentSize; // segments 0 and 3 hold data; 1, 2 and 4 only zeros
    private readonly TestSshServer _server;

    public RemoteCopyCheckTests(SshServerFixture fixture) => _server = fixture.Server;

    /// <summary>The copy on the server (a sparse file), its digest list as taken before anything rots.</summary>
    private static async Task<BlockDigestList> CopyOnServerAsync(string path)
    {
        using (var handle = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite))
        {
            RandomAccess.SetLength(handle, Size);
            RandomAccess.Write(handle, RandomNumberGenerator.GetBytes(4096), 1 * MiB);
            RandomAccess.Write(handle, RandomNumberGenerator.GetBytes(5000), 50 * MiB);
        }
        return await SparseCopy.DigestListAsync(path, null, CancellationToken.None);
    }

    private static void FlipByte(string path, long offset)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        var b = new byte[1];
        RandomAccess.Read(handle, b, offset);
        b[0] ^= 0x5A;
        RandomAccess.Write(handle, b, offset);
    }

    private static string SegmentSha256(string path, long segment)
    {
        using var file = File.OpenRead(path);
        var bytes = new byte[BlockDigestList.SegmentSize];
        file.Position = segment * BlockDigestList.SegmentSize;
        file.ReadExactly(bytes);
        return Convert.ToHexStringLower(SHA256.HashData(bytes));
    }

    /// <summary>The server store, counting its read-backs (segment digests, zero checks): one ssh command each here.</summary>
    private HookedStore Counting(string root, Action counted) =>
        new(_server.Store("good", root), (_, writer) => writer)
        {
            BeforeReadBack = (_, _) =>
            {
                counted();
                return Task.CompletedTask;
            },
        };

    [Fact]
    public async Task A_good_copy_is_checked_with_one_command_for_its_digests_and_one_for_its_zeros()
    {
        var root = _server.DataFolder(nameof(A_good_copy_is_checked_with_one_command_for_its_digests_and_one_for_its_zeros));
        var list = await CopyOnServerAsync(Path.Combine(root, "copy"));
        var readBacks = 0;
        await using var store = Counting(root, () => readBacks++);

        var outcome = await RemoteCopyCheck.RunAsync(store, "copy", list.FileSize, BlockDigestList.SegmentSize, list.DataSegmentDigests(), CancellationToken.None);

        Assert.Null(outcome.Failed);
        Assert.Equal((2, 3L), (outcome.DataSegments, outcome.ZeroSegments));
        Assert.Equal(2, readBacks);
    }

    [Fact]
    public async Task The_verification_names_the_first_segment_whose_digest_differs_and_asks_the_server_nothing_more()
    {
        var root = _server.DataFolder(nameof(The_verification_names_the_first_segment_whose_digest_differs_and_asks_the_server_nothing_more));
        var path = Path.Combine(root, "copy");
        var list = await CopyOnServerAsync(path);
        FlipByte(path, 50 * MiB + 10); // segment 3, which holds data
        FlipByte(path, 20 * MiB);      // segment 1, which held only zeros: not looked at once a digest differs
        var readBacks = 0;
        await using var store = Counting(root, () => readBacks++);

        var outcome = await RemoteCopyCheck.RunAsync(store, "copy", list.FileSize, BlockDigestList.SegmentSize, list.DataSegmentDigests(), CancellationToken.None);

        var failed = Assert.IsType<RemoteCopyCheck.Failure>(outcome.Failed);
        Assert.Equal((3L, false), (failed.Segment, failed.ZerosExpected));
        Assert.Equal(SegmentSha256(path, 3), failed.Digest);
        Assert.Equal(list.SegmentDigestHex(3), failed.Expected);
        Assert.Equal(1, readBacks);
    }

    [Fact]
    public async Task The_verification_names_the_first_byte_of_data_in_the_first_segment_of_zeros_that_holds_any()
    {
        var root = _server.DataFolder(nameof(The_verification_names_the_first_byte_of_data_in_the_first_segment_of_zeros_that_holds_any));
        var path = Path.Combine(root, "copy");
        var list = await CopyOnServerAsync(path);
        FlipByte(path, 40 * MiB + 3); // segment 2
        FlipByte(path, 70 * MiB);     // segment 4
        var readBacks = 0;
        await using var store = Counting(root, () => readBacks++);

        var outcome = await RemoteCopyCheck.RunAsync(store, "copy", list.FileSize, BlockDigestList.SegmentSize, list.DataSegmentDigests(), CancellationToken.None);

        var failed = Assert.IsType<RemoteCopyCheck.Failure>(outcome.Failed);
        Assert.Equal((2L, true, 40 * MiB + 3), (failed.Segment, failed.ZerosExpected, failed.FirstData));
        Assert.Equal(2, readBacks);
    }

    [Fact]
    public async Task A_base_read_back_finds_every_segment_that_differs_with_one_command_more_per_run_of_zeros_that_holds_data()
    {
        var root = _server.DataFolder(nameof(A_base_read_back_finds_every_segment_that_differs_with_one_command_more_per_run_of_zeros_that_holds_data));
        var path = Path.Combine(root, "copy");
        var list = await CopyOnServerAsync(path);
        FlipByte(path, 1 * MiB + 5);  // segment 0, which holds data
        FlipByte(path, 20 * MiB);     // segments 1 and 2: one run of zeros
        FlipByte(path, 40 * MiB + 3);
        FlipByte(path, 70 * MiB + 1); // segment 4, a run of its own
        var readBacks = 0;
        await using var store = Counting(root, () => readBacks++);
        var progress = new List<(long Done, long Total)>();

        var outcome = await RemoteCopyCheck.RunAsync(store, "copy", list, findAll: true, (done, total) => progress.Add((done, total)), CancellationToken.None);

        var differing = outcome.Differing.OrderBy(f => f.Segment).ToList();
        Assert.Equal([0L, 1, 2, 4], differing.Select(f => f.Segment));
        Assert.Equal((false, SegmentSha256(path, 0), list.SegmentDigestHex(0)), (differing[0].ZerosExpected, differing[0].Digest, differing[0].Expected));
        Assert.Equal([20 * MiB, 40 * MiB + 3, 70 * MiB + 1], differing.Skip(1).Select(f => f.FirstData));
        Assert.All(differing.Skip(1), f => Assert.True(f.ZerosExpected));
        Assert.Equal((2, 3L), (outcome.DataSegments, outcome.ZeroSegments));
        // The digests, the two runs of zeros, then the rest of the run after segment 1 (segment 4 ends its run).
        Assert.Equal(3, readBacks);
        Assert.Equal([(2 * BlockDigestList.SegmentSize, Size), (Size, Size)], progress);
    }
}
