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

    /// <summary>The copy on the server (a sparse file), a byte changed at each of <paramref name="rotAt"/> after its
    /// digest list was taken.</summary>
    private async Task<ServerCopy> CopyOnServerAsync(string name, params long[] rotAt)
    {
        var root = _server.DataFolder(name);
        var path = Path.Combine(root, "copy");
        using (var handle = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite))
        {
            RandomAccess.SetLength(handle, Size);
            RandomAccess.Write(handle, RandomNumberGenerator.GetBytes(4096), 1 * MiB);
            RandomAccess.Write(handle, RandomNumberGenerator.GetBytes(5000), 50 * MiB);
        }
        var list = await SparseCopy.DigestListAsync(path, null, CancellationToken.None);
        foreach (var offset in rotAt)
            FlipByte(path, offset);
        return new ServerCopy(path, list, _server.Store("good", root));
    }

    /// <summary>A copy on the server and the store that counts its read-backs (segment digests, zero checks): one ssh
    /// command each here.</summary>
    private sealed class ServerCopy : IAsyncDisposable
    {
        public ServerCopy(string path, BlockDigestList list, IBackupStore server)
        {
            Path = path;
            List = list;
            Store = new HookedStore(server, (_, writer) => writer)
            {
                BeforeReadBack = async (_, ct) =>
                {
                    lock (this)
                    {
                        ReadBacks++;
                        MostAtOnce = Math.Max(MostAtOnce, ++_running);
                    }
                    await Task.Delay(300, ct); // time for the other command to begin, were they asked at once
                    lock (this)
                        _running--;
                },
            };
        }

        public string Path { get; }
        public BlockDigestList List { get; }
        public HookedStore Store { get; }
        private int _running;

        public int ReadBacks { get; private set; }

        /// <summary>The most read-backs that were under way at the same time.</summary>
        public int MostAtOnce { get; private set; }

        /// <summary>The verification: stops at the first segment that differs.</summary>
        public Task<RemoteCopyCheck.Outcome> VerifyAsync() =>
            RemoteCopyCheck.RunAsync(Store, "copy", List.FileSize, BlockDigestList.SegmentSize, List.DataSegmentDigests(), CancellationToken.None);

        public ValueTask DisposeAsync() => Store.DisposeAsync();
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

    [Fact]
    public async Task A_good_copy_is_checked_with_one_command_for_its_digests_and_one_for_its_zeros_asked_at_once()
    {
        await using var copy = await CopyOnServerAsync(nameof(A_good_copy_is_checked_with_one_command_for_its_digests_and_one_for_its_zeros_asked_at_once));

        var outcome = await copy.VerifyAsync();

        Assert.Null(outcome.Failed);
        Assert.Equal((2, 3L), (outcome.DataSegments, outcome.ZeroSegments));
        Assert.Equal((2, 2), (copy.ReadBacks, copy.MostAtOnce));
    }

    [Fact]
    public async Task The_verification_names_the_first_segment_whose_digest_differs_before_a_segment_of_zeros_that_holds_data()
    {
        // Segment 3 holds data; segment 1 held only zeros: the digest that differs is named, though segment 1 comes first.
        await using var copy = await CopyOnServerAsync(nameof(The_verification_names_the_first_segment_whose_digest_differs_before_a_segment_of_zeros_that_holds_data),
            50 * MiB + 10, 20 * MiB);

        var outcome = await copy.VerifyAsync();

        var failed = Assert.IsType<RemoteCopyCheck.Failure>(outcome.Failed);
        Assert.Equal((3L, false), (failed.Segment, failed.ZerosExpected));
        Assert.Equal(SegmentSha256(copy.Path, 3), failed.Digest);
        Assert.Equal(copy.List.SegmentDigestHex(3), failed.Expected);
        Assert.Equal(2, copy.ReadBacks);
    }

    [Fact]
    public async Task The_verification_names_the_first_byte_of_data_in_the_first_segment_of_zeros_that_holds_any()
    {
        // Segments 2 and 4, which held only zeros.
        await using var copy = await CopyOnServerAsync(nameof(The_verification_names_the_first_byte_of_data_in_the_first_segment_of_zeros_that_holds_any),
            40 * MiB + 3, 70 * MiB);

        var outcome = await copy.VerifyAsync();

        var failed = Assert.IsType<RemoteCopyCheck.Failure>(outcome.Failed);
        Assert.Equal((2L, true, 40 * MiB + 3), (failed.Segment, failed.ZerosExpected, failed.FirstData));
        Assert.Equal(2, copy.ReadBacks);
    }

    [Fact]
    public async Task A_base_read_back_finds_every_segment_that_differs_with_one_command_more_per_run_of_zeros_that_holds_data()
    {
        // Segment 0 holds data; segments 1 and 2 are one run of zeros, segment 4 a run of its own.
        await using var copy = await CopyOnServerAsync(nameof(A_base_read_back_finds_every_segment_that_differs_with_one_command_more_per_run_of_zeros_that_holds_data),
            1 * MiB + 5, 20 * MiB, 40 * MiB + 3, 70 * MiB + 1);
        var progress = new List<(long Done, long Total)>();

        var outcome = await RemoteCopyCheck.RunAsync(copy.Store, "copy", copy.List, findAll: true, (done, total) => progress.Add((done, total)), CancellationToken.None);

        var differing = outcome.Differing.OrderBy(f => f.Segment).ToList();
        Assert.Equal([0L, 1, 2, 4], differing.Select(f => f.Segment));
        Assert.Equal((false, SegmentSha256(copy.Path, 0), copy.List.SegmentDigestHex(0)), (differing[0].ZerosExpected, differing[0].Digest, differing[0].Expected));
        Assert.Equal([20 * MiB, 40 * MiB + 3, 70 * MiB + 1], differing.Skip(1).Select(f => f.FirstData));
        Assert.All(differing.Skip(1), f => Assert.True(f.ZerosExpected));
        Assert.Equal((2, 3L), (outcome.DataSegments, outcome.ZeroSegments));
        // The digests, the two runs of zeros, then the rest of the run after segment 1 (segment 4 ends its run).
        Assert.Equal(3, copy.ReadBacks);
        Assert.Equal([(2 * BlockDigestList.SegmentSize, Size), (Size, Size)], progress);
    }
}
