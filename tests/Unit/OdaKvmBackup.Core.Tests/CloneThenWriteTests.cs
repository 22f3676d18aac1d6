using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// The new copy's file while the destination clones the base into it: the clone takes 0.7 s to the lab's sshd, time
/// the VM spends on its overlay if the copy's reading waits for it. The copy reads on; what it writes meanwhile is
/// held in memory, up to a bound, and reaches the clone in its order once the clone is made.
/// </summary>
public sealed class CloneThenWriteTests : IDisposable
{
    private const int MiB = 1 << 20;
    private const int Block = 64 << 10;
    private const string BaseCopy = "vm/run1/disk";
    private const string Partial = "vm/run2/disk.partial";
    private readonly TempFolder _temp = new("clonethenwrite-tests");
    private readonly InterceptingStore _store;
    private readonly TaskCompletionSource _cloneMay = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public CloneThenWriteTests()
    {
        _store = new InterceptingStore(_temp.Combine("store"));
        _store.CloneDelay = () => _cloneMay.Task;
        Directory.CreateDirectory(_temp.Combine("store/vm/run1"));
        Directory.CreateDirectory(_temp.Combine("store/vm/run2"));
    }

    public void Dispose() => _temp.Dispose();

    private string InStore(string relative) => _temp.Combine("store/" + relative);

    /// <summary>The base copy in the store (random data), and the base as the copy knows it: its digest list.</summary>
    private async Task<DiskBase> BaseAsync(long size)
    {
        var bytes = new byte[size];
        new Random(42).NextBytes(bytes);
        await File.WriteAllBytesAsync(InStore(BaseCopy), bytes);
        var list = await SparseCopy.DigestListAsync(InStore(BaseCopy), null, CancellationToken.None);
        return new DiskBase("run1", BaseCopy, BaseCopy + ".digests", list);
    }

    private static byte[] Filled(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    [Fact]
    public async Task Writes_made_while_the_clone_is_made_do_not_wait_for_it_and_reach_the_copy_in_their_order()
    {
        var chosen = await BaseAsync(4 * MiB);
        var baseBytes = await File.ReadAllBytesAsync(InStore(BaseCopy));

        var writer = new CloneThenWrite(_store, chosen, Partial, CancellationToken.None);
        var first = writer.WriteAsync(0, Filled(Block, 0xaa), CancellationToken.None);
        var second = writer.WriteAsync(2 * Block, Filled(Block, 0xcc), CancellationToken.None);
        var again = writer.WriteAsync(0, Filled(Block, 0xbb), CancellationToken.None); // the same block, written later

        Assert.True(first.IsCompleted && second.IsCompleted && again.IsCompleted, "a write waited for the clone");
        Assert.False(File.Exists(InStore(Partial)), "the clone was made before it was let");
        _cloneMay.SetResult();
        var after = writer.WriteAsync(3 * Block, Filled(Block, 0xdd), CancellationToken.None); // after the clone
        await after;
        await writer.CompleteAsync(4 * MiB, CancellationToken.None);
        await writer.DisposeAsync();

        var copy = await File.ReadAllBytesAsync(InStore(Partial));
        var expected = (byte[])baseBytes.Clone();
        Filled(Block, 0xbb).CopyTo(expected, 0);
        Filled(Block, 0xcc).CopyTo(expected, 2 * Block);
        Filled(Block, 0xdd).CopyTo(expected, 3 * Block);
        Assert.True(expected.SequenceEqual(copy), "the copy is not the base with the writes in their order");
        var baseAfter = await File.ReadAllBytesAsync(InStore(BaseCopy));
        Assert.True(baseBytes.SequenceEqual(baseAfter), "the base was written to");
    }

    [Fact]
    public async Task A_write_past_what_may_be_held_waits_for_the_clone()
    {
        var chosen = await BaseAsync(4 * MiB);
        var writer = new CloneThenWrite(_store, chosen, Partial, CancellationToken.None, heldLimit: 2 * Block);

        var held = new[] { writer.WriteAsync(0, Filled(Block, 1), CancellationToken.None), writer.WriteAsync(Block, Filled(Block, 2), CancellationToken.None) };
        var third = writer.WriteAsync(0, Filled(Block, 3), CancellationToken.None).AsTask(); // the first block again
        await Task.Delay(200);

        Assert.All(held, w => Assert.True(w.IsCompleted));
        Assert.False(third.IsCompleted, "a write past the bound went on before the clone was made");
        _cloneMay.SetResult();
        await third.WaitAsync(TimeSpan.FromSeconds(10));
        await writer.CompleteAsync(4 * MiB, CancellationToken.None);
        await writer.DisposeAsync();
        var copy = await File.ReadAllBytesAsync(InStore(Partial));
        Assert.Equal(new byte[] { 3, 2 }, new[] { copy[0], copy[Block] }); // the later write of the first block won
    }

    [Fact]
    public async Task A_clone_that_fails_drops_the_held_writes_and_says_why()
    {
        var chosen = await BaseAsync(4 * MiB);
        var writer = new CloneThenWrite(_store, chosen, Partial, CancellationToken.None);
        var write = writer.WriteAsync(0, Filled(Block, 0xaa), CancellationToken.None).AsTask();

        _cloneMay.SetException(new IOException("the server cannot clone"));
        Assert.True(write.IsCompletedSuccessfully, "the write waited for the clone");
        await Assert.ThrowsAnyAsync<Exception>(() => writer.CompleteAsync(4 * MiB, CancellationToken.None));
        await writer.DisposeAsync();

        Assert.True(writer.Failed.IsCancellationRequested, "the copy reading meanwhile was not stopped");
        Assert.Contains("could not be cloned at the destination (the server cannot clone)", writer.FailedBecause, StringComparison.Ordinal);
        Assert.False(File.Exists(InStore(Partial)), "a file was written for a clone that failed");
    }

    // What a user notices: while the server makes the clone, the copy reads the frozen disk to its end (the VM's time
    // on its overlay does not wait for the clone). Without the held writes the reading stopped once every digest
    // worker had a changed block to write, ~64 MiB on, until the clone was made: a block changed in each 16 MiB
    // segment (scattered writes, as a database's) stops them all.
    [Fact]
    public async Task The_copy_reads_the_whole_disk_while_the_clone_is_made()
    {
        const int size = 160 * MiB;
        var chosen = await BaseAsync(size);
        var source = _temp.Combine("source");
        File.Copy(InStore(BaseCopy), source);
        await using (var changed = new FileStream(source, FileMode.Open, FileAccess.Write))
        {
            for (long segment = 0; segment < size / BlockDigestList.SegmentSize; segment++)
            {
                changed.Position = segment * BlockDigestList.SegmentSize;
                changed.Write(Filled(Block, 0x5a));
            }
        }
        var readToTheEnd = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        var writer = new CloneThenWrite(_store, chosen, Partial, CancellationToken.None);
        var copy = SparseCopy.CopyAsync(source, writer, new CopyBase(chosen.List, new HashSet<long>()), 0, p =>
        {
            if (p.Compared == p.Total)
                readToTheEnd.TrySetResult();
        }, CancellationToken.None);

        var finished = await Task.WhenAny(readToTheEnd.Task, copy, Task.Delay(TimeSpan.FromSeconds(20)));
        var readAll = readToTheEnd.Task.IsCompleted;
        _cloneMay.TrySetResult();
        var result = await copy;
        await writer.DisposeAsync();

        Assert.True(readAll, "the copy stopped reading until the clone was made");
        Assert.Equal(size / BlockDigestList.SegmentSize * Block, result.BytesSent);
        Assert.True(File.ReadAllBytes(source).SequenceEqual(File.ReadAllBytes(InStore(Partial))), "the copy differs from the source");
    }
}
