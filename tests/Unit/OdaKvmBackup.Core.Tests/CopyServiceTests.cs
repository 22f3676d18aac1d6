using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>Copy-VmDisk's engine on real temp files: what lands in the backup set, and what the set says when
/// anything goes wrong.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class CopyServiceTests : IDisposable
{
    private const string Domain = Bench.Domain;
    private readonly Bench _b = new();

    public CopyServiceTests(StateDirectoryFixture state) => state.Reset();

    public void Dispose() => _b.Dispose();

    private string Destination => _b.Temp.Folder("backups");

    private static string SetPath(IBackupStore store, BackupRun run, params string[] parts) =>
        Path.Combine([store.Location, Domain, run.RunId, .. parts]);

    [Fact]
    public async Task Copies_are_sparse_carry_the_sources_digest_list_and_make_the_set_Complete()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(Destination);

        var failed = await _b.CopyAllAsync(run, store);

        Assert.Empty(failed);
        foreach (var (target, source, name) in new[] { ("vda", _b.Boot, "oda_vm1_boot"), ("vdb", _b.Data, "data1") })
        {
            var copy = SetPath(store, run, name);
            Assert.True(Files.SameBytes(source, copy), $"{name} differs from {source}");
            Assert.True(Files.AllocatedBytes(copy) < 256 * 1024, $"{name} allocates {Files.AllocatedBytes(copy)} bytes");
            // The list beside the copy is the source's, and the manifest records its SHA-256.
            var list = await SparseCopy.DigestListAsync(source, null, CancellationToken.None);
            var disk = run.Disks.Single(d => d.Target == target);
            Assert.Equal(list.Sha256, disk.Digests);
            Assert.Equal(list.Bytes.ToArray(), File.ReadAllBytes(copy + ".digests"));
            Assert.Null(disk.ContentDigest);
            Assert.Equal(("full", (string?)null), (disk.StoredAs, disk.BasedOn));
            Assert.Contains("no earlier Complete set", disk.FullBecause, StringComparison.Ordinal);
            Assert.Equal(disk.CopiedBytes, disk.BytesSent);
            Assert.True(disk.Verified);
            Assert.Equal(BackupStage.Copied, disk.Stage);
            Assert.Equal(copy, disk.BackupFile);
        }
        Assert.True(Files.AllocatedBytes(_b.Data) >= 6L * Files.MiB, "precondition: the data disk is fully allocated");
        var manifest = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        Assert.NotNull(manifest.CompletedUtc);
        Assert.All(manifest.Disks, d => Assert.True(d.Verified && d.VerifiedBy is { Length: > 0 } && d.Digests is { Length: 64 } && d.ContentDigest is null));
        // The virtual size qemu-img info gave at planning time: what a copy is checked against before QEMU reads it.
        Assert.Equal([4L * Files.MiB, 6L * Files.MiB], manifest.Disks.OrderBy(d => d.Target, StringComparer.Ordinal).Select(d => d.VirtualSizeBytes));
        Assert.Equal(["backup.json", "data1", "data1.digests", "domain.xml", "oda_vm1_boot", "oda_vm1_boot.digests"], Directory.GetFiles(SetPath(store, run)).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task Every_file_and_folder_of_the_set_is_private_even_under_umask_000()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(Destination);

        using (Umask.Set(0))
            Assert.Empty(await _b.CopyAllAsync(run, store));

        Assert.Equal(PrivateFiles.FolderMode, File.GetUnixFileMode(Path.Combine(store.Location, Domain)));
        Assert.Equal(PrivateFiles.FolderMode, File.GetUnixFileMode(SetPath(store, run)));
        foreach (var file in Directory.GetFiles(SetPath(store, run)))
            Assert.True(File.GetUnixFileMode(file) == PrivateFiles.FileMode, $"{file} is {File.GetUnixFileMode(file)}");
        Assert.Equal(6, Directory.GetFiles(SetPath(store, run)).Length); // two copies, their digest lists, backup.json, domain.xml
    }

    [Fact]
    public async Task Manifest_lists_the_disks_left_out_and_why()
    {
        var request = _b.Request();
        var plan = await new SnapshotService(_b.Tools).PlanAsync(request with { Disks = request.Disks.Where(d => d.Target == "vda").ToList() }, CancellationToken.None);
        Assert.Empty(plan.Problems);
        var run = _b.Begin(plan);
        await new SnapshotService(_b.Tools).SnapshotAsync(run, plan, CancellationToken.None);
        var store = new LocalBackupStore(Destination);

        Assert.Empty(await _b.CopyAllAsync(run, store));

        var manifest = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        Assert.Equal(["vda"], manifest.Disks.Select(d => d.Target));
        Assert.Equal(new ExcludedDisk("vdb", _b.Data, "not piped to New-KvmDiskSnapshot"), Assert.Single(manifest.ExcludedDisks));
    }

    [Fact]
    public async Task Copy_that_reads_back_differently_is_CopyVerificationFailed_and_the_set_says_Incomplete_and_why()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(Destination)
        {
            // The storage changes a byte of the data disk's copy after it was written and synced.
            WrapWriter = (path, writer) => path.EndsWith("/data1.partial", StringComparison.Ordinal)
                ? new AfterCloseWriter(writer, () => FlipByte(Path.Combine(Destination, path), 2L * Files.MiB + 10))
                : writer,
        };

        var failed = await _b.CopyAllAsync(run, store);

        var error = Assert.Single(failed);
        Assert.Equal(ErrorIds.CopyVerificationFailed, error.ErrorId);
        Assert.Contains("vdb", error.Message, StringComparison.Ordinal);
        Assert.Contains(_b.Data, error.Message, StringComparison.Ordinal);
        var manifest = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Incomplete, manifest.Status);
        Assert.Contains("vdb", manifest.Reason, StringComparison.Ordinal);
        Assert.False(manifest.Disks.Single(d => d.Target == "vdb").Verified);
        Assert.False(File.Exists(SetPath(store, run, "data1")), "a copy that failed its check never gets its final name");
        Assert.False(File.Exists(SetPath(store, run, "data1.digests")), "nor does its digest list");
        Assert.Empty(Directory.GetFiles(SetPath(store, run), "*.partial"));
    }

    [Fact]
    public async Task Failed_check_of_one_disk_neither_spoils_the_check_of_another_nor_is_undone_by_it()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(Destination)
        {
            WrapWriter = (path, writer) => path.EndsWith("/data1.partial", StringComparison.Ordinal)
                ? new AfterCloseWriter(writer, () => FlipByte(Path.Combine(Destination, path), 2L * Files.MiB + 10))
                : writer,
        };
        // vda's copy has been read back and matched; before it gets its final name, vdb's check fails.
        store.BeforeRename = async (from, to) =>
        {
            if (to.EndsWith("/oda_vm1_boot", StringComparison.Ordinal))
                await WaitUntilAsync(() => File.ReadAllText(Path.Combine(Destination, Path.GetDirectoryName(to)!, "backup.json")).Contains("\"Incomplete\"", StringComparison.Ordinal),
                    "vdb's failed check to mark the set Incomplete");
        };

        var failed = await _b.CopyAllAsync(run, store);

        var error = Assert.Single(failed); // vda's check is not turned into a storage error
        Assert.Equal(ErrorIds.CopyVerificationFailed, error.ErrorId);
        Assert.Contains("vdb", error.Message, StringComparison.Ordinal);
        Assert.True(run.Disks.Single(d => d.Target == "vda").Verified);
        Assert.True(Files.SameBytes(_b.Boot, SetPath(store, run, "oda_vm1_boot")));
        var manifest = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Incomplete, manifest.Status); // vda passing later does not make the set whole again
        Assert.Contains("vdb", manifest.Reason, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFiles(SetPath(store, run), "*.partial"));
    }

    [Fact]
    public async Task Store_that_answers_asynchronously_gets_one_set_for_all_the_disks_of_a_run()
    {
        // An SSH store answers after a round trip: both disks' copies start before the set exists.
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(Destination) { Latency = TimeSpan.FromMilliseconds(20) };

        var failed = await _b.CopyAllAsync(run, store);

        Assert.Empty(failed);
        Assert.Equal(BackupSetStatus.Complete, (await Bench.ManifestAsync(store, run)).Status);
        Assert.True(File.Exists(SetPath(store, run, "oda_vm1_boot")) && File.Exists(SetPath(store, run, "data1")));
    }

    [Fact]
    public async Task Set_whose_last_two_checks_finish_together_ends_Complete()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(Destination);
        // The first check's manifest write is slow (a busy NFS server): the second check, which completes the set,
        // writes meanwhile if it may. What is written last must be the set's real state.
        var held = 0;
        var firstWrite = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var renames = 0;
        // The second copy to pass its check gets its final name only once the first one's manifest write started.
        store.BeforeRename = async (_, _) =>
        {
            if (Interlocked.Increment(ref renames) == 2)
                await firstWrite.Task.WaitAsync(TimeSpan.FromSeconds(5));
        };
        store.BeforeWriteSmallFile = async (path, content) =>
        {
            var text = System.Text.Encoding.UTF8.GetString(content);
            if (!path.EndsWith("/backup.json", StringComparison.Ordinal) || !text.Contains("\"Verified\": true", StringComparison.Ordinal)
                || !text.Contains("\"InProgress\"", StringComparison.Ordinal) || Interlocked.Exchange(ref held, 1) == 1)
                return;
            firstWrite.SetResult();
            // Hold this write until the other check has recorded its result too; then give its manifest write a
            // moment to land first (it does at once if nothing orders the writes).
            await WaitUntilAsync(() => RunJournal.TryLoad(Domain)!.Disks.All(d => d.Verified), "the second check to pass");
            var manifest = Path.Combine(Destination, path);
            for (var i = 0; i < 20 && !File.ReadAllText(manifest).Contains("\"Complete\"", StringComparison.Ordinal); i++)
                await Task.Delay(10);
        };

        Assert.Empty(await _b.CopyAllAsync(run, store));

        Assert.Equal(1, held);
        Assert.Equal(BackupSetStatus.Complete, (await Bench.ManifestAsync(store, run)).Status);
    }

    [Fact]
    public async Task Destination_that_runs_out_of_space_is_DestinationFull()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(Destination)
        {
            // A real ENOSPC: writes to /dev/full fail as a full file system does.
            WrapWriter = (path, writer) => new FailingWriter(writer, () =>
            {
                using var full = File.OpenHandle("/dev/full", FileMode.Open, FileAccess.Write);
                RandomAccess.Write(full, new byte[] { 1 }, 0);
            }),
        };
        var copy = new CopyService(_b.Tools, store, false, 0, 1, new RecordingSink());
        copy.Start(run, CancellationToken.None);

        var ex = await Assert.ThrowsAsync<BackupException>(() => copy.NextAsync(run));

        Assert.Equal(ErrorIds.DestinationFull, ex.ErrorId);
        Assert.Contains(store.Location, ex.Message, StringComparison.Ordinal);
        Assert.Contains("Free space", ex.RecommendedAction, StringComparison.Ordinal);
        Assert.All(run.Disks, d => Assert.Equal(BackupStage.Snapshotted, d.Stage)); // still frozen: nothing recorded as copied
        // No disk is left marked as being copied, the one waiting for a copy slot included: Invoke-BlockCommit
        // may commit them, and the rollback does not wait for copies that are not running.
        run.BeginCommit("vda");
        run.BeginCommit("vdb");
        await copy.AbandonAsync(run);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
        var outcome = await run.FailAsync("copying a disk of 'oda_vm1' failed", new RecordingSink());
        Assert.True(outcome.Clean, outcome.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"the rollback took {clock.Elapsed}");
        Assert.Equal(BackupSetStatus.Incomplete, (await Bench.ManifestAsync(store, run)).Status);
    }

    [Fact]
    public async Task Stopping_the_copies_frees_every_disk_even_one_still_waiting_for_a_copy_slot()
    {
        // -ThrottleLimit 1: vdb waits for vda's copy when Ctrl+C comes.
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(Destination) { WrapWriter = (path, writer) => new StuckWriter(writer) };
        var copy = new CopyService(_b.Tools, store, false, 0, 1, new RecordingSink());
        copy.Start(run, CancellationToken.None);

        await copy.AbandonAsync(run);

        run.BeginCommit("vda");
        run.BeginCommit("vdb"); // DiskBeingCopied if vdb were still marked as being copied
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var outcome = await run.FailAsync("the pipeline stopped before the backup finished", new RecordingSink());
        Assert.True(outcome.Clean, outcome.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"the rollback waited {clock.Elapsed} for copies that were not running");
    }

    [Fact]
    public async Task With_fewer_slots_than_disks_the_smallest_disk_is_copied_and_handed_on_first()
    {
        // vda (4 MiB) is listed first, vdb (2 MiB) is smaller: with -ThrottleLimit 1 vdb goes back to its own file first.
        using var b = new Bench(dataSize: 2L * Files.MiB);
        var run = await b.SnapshottedAsync();
        var copy = new CopyService(b.Tools, new LocalBackupStore(b.Temp.Folder("backups")), false, 0, 1, new RecordingSink());
        copy.Start(run, CancellationToken.None);

        var handedOn = new List<string>();
        while (await copy.NextAsync(run) is { } done)
            handedOn.Add(done.Disk.Target);

        Assert.Equal(["vdb", "vda"], handedOn);
        Assert.Empty(await copy.FinishVerificationsAsync());
    }

    [Theory]
    [InlineData(40, new[] { "oda_vm1_boot begins", "oda_vm1_boot ends", "data1 begins", "data1 ends" })] // 4 MiB and 40 MiB: the boot disk alone first
    [InlineData(6, new[] { "data1 begins", "oda_vm1_boot begins" })] // 4 MiB and 6 MiB: together (both begin before either ends)
    public async Task A_disk_is_copied_after_the_disks_of_its_VM_under_a_quarter_of_its_size_and_with_those_of_like_size(int dataMiB, string[] expected)
    {
        using var b = new Bench(dataSize: dataMiB * Files.MiB);
        var run = await b.SnapshottedAsync();
        var events = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var store = new InterceptingStore(b.Temp.Folder("backups"))
        {
            // Each copy's end held back a while: time for another copy to begin, were they run together.
            WrapWriter = (path, writer) => path.EndsWith(".partial", StringComparison.Ordinal) && !path.Contains(".digests", StringComparison.Ordinal)
                ? new Watched(writer, Path.GetFileName(path).Replace(".partial", "", StringComparison.Ordinal), events)
                : writer,
        };
        var copy = new CopyService(b.Tools, store, false, 0, 2, new RecordingSink());
        copy.Start(run, CancellationToken.None);

        while (await copy.NextAsync(run) is not null)
        {
        }

        if (expected.Length == 4)
            Assert.Equal(expected, events);
        else
            Assert.Equal(expected, events.Take(2).Order(StringComparer.Ordinal));
        Assert.Empty(await copy.FinishVerificationsAsync());
        Assert.Equal(BackupSetStatus.Complete, (await Bench.ManifestAsync(store, run)).Status);
    }

    /// <summary>Says when a copy's writer got its first write and when it completed, the completion held 1 s.</summary>
    private sealed class Watched(IStoreFileWriter inner, string name, System.Collections.Concurrent.ConcurrentQueue<string> events) : IStoreFileWriter
    {
        private int _began;

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
        {
            if (Interlocked.Exchange(ref _began, 1) == 0)
                events.Enqueue($"{name} begins");
            return inner.WriteAsync(offset, data, ct);
        }

        public async Task CompleteAsync(long size, CancellationToken ct)
        {
            await Task.Delay(1000, ct);
            await inner.CompleteAsync(size, ct);
            events.Enqueue($"{name} ends");
        }

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    [Fact]
    public async Task Run_given_up_while_a_copy_still_runs_stops_that_copy_at_once_and_its_set_is_Incomplete()
    {
        // Ctrl+C right after vda's copy was handed on to Invoke-BlockCommit, vdb still copied: PowerShell calls no
        // StopProcessing of a pipeline that has begun to end, so Copy-VmDisk's stop may never come (here: a token
        // never cancelled). The rollback (the lease of the stopped pipeline) must stop vdb's copy itself.
        using var bench = new Bench(dataSize: 32L * Files.MiB);
        using (var data = new FileStream(bench.Data, FileMode.Open, FileAccess.Write))
        {
            var bytes = new byte[32 * Files.MiB];
            new Random(3).NextBytes(bytes);
            data.Write(bytes); // data all through: every byte of it is read, at the bandwidth limit
        }
        var run = await bench.SnapshottedAsync();
        var store = new LocalBackupStore(bench.Temp.Folder("backups"));
        // 1 MiB/s: vda (4 MiB) is copied in about 4 s, vdb (32 MiB of data) would take 32 s.
        var copy = new CopyService(bench.Tools, store, false, 1, 2, new RecordingSink());
        copy.Start(run, CancellationToken.None);
        var first = await copy.NextAsync(run);
        Assert.Equal("vda", first!.Disk.Target);
        bench.Host.OnBlockCommit = bench.Host.CommitAndPivot;

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var outcome = await run.FailAsync("the pipeline stopped before the backup finished", new RecordingSink());

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"the rollback waited {clock.Elapsed} for vdb's copy to end by itself");
        Assert.True(outcome.Clean, outcome.Message);
        Assert.Equal([bench.Boot, bench.Data], bench.Host.Disks.Select(d => d.Source));
        Assert.All(bench.Host.Disks, d => Assert.Null(d.Backing));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => copy.NextAsync(run));
        Assert.NotEqual(BackupStage.Copied, run.Disks.Single(d => d.Target == "vdb").Stage);
        await copy.FinishVerificationsAsync();
        Assert.Equal(BackupSetStatus.Incomplete, (await Bench.ManifestAsync(store, run)).Status);
        Assert.Empty(Directory.GetFiles(SetPath(store, run), "*.partial"));
    }

    [Fact]
    public async Task Write_that_fails_for_another_reason_is_CopyFailed_with_the_cause()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(Destination)
        {
            WrapWriter = (path, writer) => new FailingWriter(writer, () => throw new IOException("Input/output error", 5)),
        };
        var copy = new CopyService(_b.Tools, store, false, 0, 1, new RecordingSink());
        copy.Start(run, CancellationToken.None);

        var ex = await Assert.ThrowsAsync<BackupException>(() => copy.NextAsync(run));

        Assert.Equal(ErrorIds.CopyFailed, ex.ErrorId);
        Assert.Contains("Input/output error", ex.Message, StringComparison.Ordinal);
        Assert.Contains(store.Location, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Source_that_cannot_be_read_is_CopyFailed_naming_it()
    {
        var run = await _b.SnapshottedAsync();
        File.Delete(_b.Boot);
        var copy = new CopyService(_b.Tools, new LocalBackupStore(Destination), false, 0, 1, new RecordingSink());
        copy.Start(run, CancellationToken.None);

        var ex = await Assert.ThrowsAsync<BackupException>(async () =>
        {
            while (await copy.NextAsync(run) is not null)
            {
            }
        });

        Assert.Equal(ErrorIds.CopyFailed, ex.ErrorId);
        Assert.Contains(_b.Boot, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Cold_copy_of_a_domain_started_meanwhile_is_DomainStartedDuringColdCopy_and_the_set_never_Complete()
    {
        _b.Host.State = "shut off";
        var run = _b.Begin(await _b.PlanAsync());
        var store = new InterceptingStore(Destination)
        {
            WrapWriter = (path, writer) =>
            {
                _b.Host.State = "running"; // someone started the VM while its disks were read
                return writer;
            },
        };
        var copy = new CopyService(_b.Tools, store, false, 0, 1, new RecordingSink());
        copy.Start(run, CancellationToken.None);

        var ex = await Assert.ThrowsAsync<BackupException>(() => copy.NextAsync(run));
        await copy.AbandonAsync(run);
        await run.FailAsync("copying a disk of 'oda_vm1' failed", new RecordingSink());

        Assert.Equal(ErrorIds.DomainStartedDuringColdCopy, ex.ErrorId);
        Assert.Contains("may be inconsistent", ex.Message, StringComparison.Ordinal);
        var manifest = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Incomplete, manifest.Status);
        Assert.Empty(Directory.GetFiles(SetPath(store, run), "*.partial"));
    }

    [Fact]
    public async Task Cold_copy_of_a_domain_that_stays_shut_off_is_Complete_without_any_snapshot()
    {
        _b.Host.State = "shut off";
        var run = _b.Begin(await _b.PlanAsync());
        var store = new LocalBackupStore(Destination);

        Assert.Empty(await _b.CopyAllAsync(run, store));

        var manifest = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        Assert.Equal(BackupConsistency.Cold, manifest.Consistency);
        Assert.DoesNotContain(_b.Host.Calls, c => c.Command == "snapshot-create-as");
    }

    [Fact]
    public async Task A_copy_on_an_SSH_server_that_holds_data_where_the_source_has_only_zeros_fails_its_check_on_the_server()
    {
        // 40 MiB: the 16 MiB segment from 16 to 32 MiB holds only zeros, so the copy has no digest for it.
        using var bench = new Bench(dataSize: 40L * Files.MiB);
        using var server = new TestSshServer();
        var root = server.DataFolder("zeros");
        var run = await bench.SnapshottedAsync();
        await using var store = new HookedStore(server.Store("good", root), (path, writer) => path.EndsWith("/data1.partial", StringComparison.Ordinal)
            // The server writes a byte into the hole once the copy is written, synced and closed.
            ? new AfterCloseWriter(writer, () => FlipByte(Path.Combine(root, path), 20L * Files.MiB + 3))
            : writer);

        var failed = await bench.CopyAllAsync(run, store);

        var error = Assert.Single(failed);
        Assert.Equal(ErrorIds.CopyVerificationFailed, error.ErrorId);
        Assert.Contains("vdb", error.Message, StringComparison.Ordinal);
        Assert.Contains($"offset {16L * Files.MiB}", error.Message, StringComparison.Ordinal);
        var manifest = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Incomplete, manifest.Status);
        Assert.True(manifest.Disks.Single(d => d.Target == "vda").Verified);
        Assert.Contains("zeros", manifest.Disks.Single(d => d.Target == "vda").VerifiedBy, StringComparison.Ordinal);
    }

    private static void FlipByte(string path, long offset)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        var b = new byte[1];
        RandomAccess.Read(handle, b, offset);
        b[0] = (byte)(b[0] == 0x55 ? 0x56 : 0x55); // never zero: the block stays data, with other content
        RandomAccess.Write(handle, b, offset);
        RandomAccess.FlushToDisk(handle);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        for (var i = 0; i < 500 && !condition(); i++)
            await Task.Delay(10);
        if (!condition())
            throw new TimeoutException($"waited 5 s for {what}");
    }
}
