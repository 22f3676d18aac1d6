using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// Issue 15, chain-free incrementals, through Copy-VmDisk's engine on real temp files and a local store: two runs of
/// the same VM in a row (cold: the VM is shut off, so each run ends at once), the second based on the first. What a
/// user notices: the second set is whole and byte-identical to the disks, it says on which set it is based and how
/// it was stored, it sent about what changed, and the first set is never written to.
/// </summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class IncrementalBackupTests : IDisposable
{
    private const string Domain = Bench.Domain;
    private readonly Bench _b = new(dataSize: 40L * Files.MiB);

    public IncrementalBackupTests(StateDirectoryFixture state)
    {
        state.Reset();
        _b.Host.State = "shut off";
    }

    public void Dispose() => _b.Dispose();

    private string Destination => _b.Temp.Folder("backups");

    private static string SetPath(BackupRun run, IBackupStore store, params string[] parts) => Path.Combine([store.Location, Domain, run.RunId, .. parts]);

    /// <summary>One backup run as New-KvmDiskSnapshot | Copy-VmDisk runs it: the preflight (Copy-VmDisk's part
    /// included: the base chosen and read back), then the copies and their checks; the run is then over.</summary>
    /// <param name="preflightBases">false: the bases are chosen and read back by the copies themselves, while they
    /// copy (Copy-VmDisk in a pipeline of its own, without New-KvmDiskSnapshot's preflight).</param>
    private async Task<(BackupRun Run, IReadOnlyList<BackupException> Failed, SnapshotPlan Plan)> BackUpAsync(IBackupStore store, RecordingSink sink,
        bool full = false, Action<SnapshotPlan>? beforeCopy = null, Action<BackupRun>? afterCopies = null, bool preflightBases = true, int bandwidthMiBps = 0)
    {
        var copy = new CopyService(_b.Tools, store, force: false, bandwidthMiBps, throttleLimit: 2, sink, full);
        var plan = await _b.PlanAsync(new CopyDestinationCheck(store, false, preflightBases ? copy.Bases : null));
        var run = _b.Begin(plan);
        beforeCopy?.Invoke(plan);
        copy.Start(run, CancellationToken.None);
        var failed = new List<BackupException>();
        try
        {
            while (await copy.NextAsync(run) is not null)
            {
            }
        }
        catch (BackupException ex)
        {
            failed.Add(ex);
            await copy.AbandonAsync(run);
            await run.FailAsync("copying a disk of 'oda_vm1' failed", sink);
        }
        failed.AddRange(await copy.FinishVerificationsAsync());
        afterCopies?.Invoke(run);
        run.Release();
        return (run, failed, plan);
    }

    /// <summary>Writes <paramref name="length"/> bytes of new data into a disk file at <paramref name="offset"/>.</summary>
    private static void Write(string path, long offset, int length, byte value)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        var bytes = new byte[length];
        Array.Fill(bytes, value);
        RandomAccess.Write(handle, bytes, offset);
        RandomAccess.FlushToDisk(handle);
    }

    private static string Sha256Of(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    private static Dictionary<string, string> HashesOf(string folder) =>
        Directory.GetFiles(folder).ToDictionary(f => Path.GetFileName(f), Sha256Of);

    [Fact]
    public async Task Second_backup_is_based_on_the_first_sends_about_what_changed_and_stands_alone()
    {
        var store = new LocalBackupStore(Destination);
        var (first, failed, _) = await BackUpAsync(store, new RecordingSink());
        Assert.Empty(failed);
        var firstSet = HashesOf(SetPath(first, store));
        // The guest wrote 128 KiB into the data disk (two 64 KiB blocks), nothing into the boot disk.
        Write(_b.Data, 20L * Files.MiB, 128 << 10, 0x5a);
        var sink = new RecordingSink();

        var (second, failedAgain, _) = await BackUpAsync(store, sink);

        Assert.Empty(failedAgain);
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        var data = manifest.Disks.Single(d => d.Target == "vdb");
        var boot = manifest.Disks.Single(d => d.Target == "vda");
        Assert.All(manifest.Disks, d =>
        {
            Assert.Equal(first.RunId, d.BasedOn);
            Assert.Null(d.FullBecause);
            Assert.Contains(d.StoredAs, new[] { FileClone.Reflink, FileClone.LocalCopy });
            Assert.Equal(0, d.BytesResent);
            Assert.True(d.Verified);
        });
        Assert.Equal(128L << 10, data.BytesSent);
        Assert.Equal(0, boot.BytesSent);
        // The whole disk was compared: every extent that may hold data was read (a file system may report allocated but
        // never written extents as holes, which read as zeros).
        Assert.InRange(data.BytesRead!.Value, data.DataBytes!.Value, 40L * Files.MiB);
        // Every copy is the disk, whole, and its list is the one the manifest names.
        Assert.True(Files.SameBytes(_b.Data, SetPath(second, store, "data1")));
        Assert.True(Files.SameBytes(_b.Boot, SetPath(second, store, "oda_vm1_boot")));
        foreach (var disk in manifest.Disks)
        {
            var list = File.ReadAllBytes(SetPath(second, store, disk.File + ".digests"));
            Assert.Equal(disk.Digests, Convert.ToHexString(SHA256.HashData(list)).ToLowerInvariant());
        }
        // The first set was only read: not one byte of it changed.
        Assert.Equal(firstSet, HashesOf(SetPath(first, store)));
        // -Verbose said which base was chosen; progress showed compared and sent bytes.
        Assert.Contains(sink.Verbose, v => v.Contains($"vdb of {Domain}: based on set {first.RunId}", StringComparison.Ordinal));
        Assert.Contains(sink.Progress, p => p.Status.StartsWith("compared ", StringComparison.Ordinal) && p.Status.Contains("; sent ", StringComparison.Ordinal));
        // The second set stands alone: with the first one gone it is still whole.
        Directory.Delete(SetPath(first, store), recursive: true);
        Assert.True(Files.SameBytes(_b.Data, SetPath(second, store, "data1")));
        Assert.Equal((await SparseCopy.DigestListAsync(SetPath(second, store, "data1"), null, CancellationToken.None)).Sha256, data.Digests);
    }

    [Fact]
    public async Task Base_chosen_after_the_copy_step_let_go_of_its_read_backs_says_it_could_not_be_read_back()
    {
        // Copy-VmDisk's end (ReleaseResources: Bases.Dispose) does not wait for a copy still choosing its base: that
        // copy's read-back starts after the read-backs were stopped. It must say it could not be read back (the copy
        // is then made in full), not fail with ObjectDisposedException, which the copy would report as CopyFailed.
        var store = new LocalBackupStore(Destination);
        var (first, failed, _) = await BackUpAsync(store, new RecordingSink());
        Assert.Empty(failed);
        // Planned with the destination's check, as a pipeline is: a run id of its own even within the first's second.
        using var planning = new CopyBases(store, full: false, new RecordingSink());
        var run = _b.Begin(await _b.PlanAsync(new CopyDestinationCheck(store, false, planning)));
        var bases = new CopyBases(store, full: false, new RecordingSink());

        bases.Dispose();
        var prepared = await bases.TakeAsync(Domain, run.RunId, run.Record.Disk("vdb"), CancellationToken.None);

        Assert.Equal(first.RunId, prepared.Base?.RunId);
        var readBack = await prepared.ReadBack!;
        Assert.Contains($"the copy of vdb in set {first.RunId} could not be read back", readBack.CouldNotRead, StringComparison.Ordinal);
    }

    [Fact]
    public async Task On_XFS_with_reflink_the_second_copy_is_a_clone_and_the_destination_grows_by_about_what_changed()
    {
        using var xfs = new XfsFileSystem();
        var store = new LocalBackupStore(xfs.Folder("backups"));
        Write(_b.Data, 4L * Files.MiB, 16 * Files.MiB, 0x33); // 16 MiB of data in the data disk
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        Write(_b.Data, 20L * Files.MiB, 128 << 10, 0x5a);
        var before = xfs.UsedBytes();

        var (second, failed, _) = await BackUpAsync(store, new RecordingSink());

        Assert.Empty(failed);
        var grew = xfs.UsedBytes() - before;
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        var data = manifest.Disks.Single(d => d.Target == "vdb");
        Assert.Equal((first.RunId, FileClone.Reflink, 128L << 10), (data.BasedOn, data.StoredAs, data.BytesSent));
        // The base's data taken by the clone, counted in 64 KiB blocks: the 16 MiB written, the block at 2 MiB, the last one.
        Assert.Equal(16L * Files.MiB + 2 * (64 << 10), data.BytesCloned);
        Assert.True(Files.SameBytes(_b.Data, SetPath(second, store, "data1")));
        // A full copy would take 16 MiB more; the clone shares them with the first set.
        Assert.True(grew < 2L * Files.MiB, $"the destination grew by {grew} bytes for 128 KiB that changed");
    }

    [Fact]
    public async Task The_journal_names_the_base_before_the_clone_is_made_and_the_counters_once_copied()
    {
        var store = new InterceptingStore(Destination);
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        Write(_b.Data, 20L * Files.MiB, 128 << 10, 0x5a);
        var atClone = new Dictionary<string, DiskRecord>();
        store.BeforeClone = (_, newFile) =>
        {
            var journal = RunJournal.TryLoad(Domain)!;
            lock (atClone)
                atClone[newFile] = journal.Disks.Single(d => newFile.EndsWith("/" + BackupNames.Partial(d.SetFile), StringComparison.Ordinal));
        };
        var copied = new Dictionary<string, DiskRecord>();

        var (second, failed, _) = await BackUpAsync(store, new RecordingSink(), afterCopies: run =>
        {
            foreach (var disk in RunJournal.TryLoad(Domain)!.Disks)
                copied[disk.Target] = disk;
        });

        Assert.Empty(failed);
        Assert.Equal(2, atClone.Count);
        Assert.All(atClone.Values, d => Assert.Equal((first.RunId, (string?)null, (string?)null), (d.BasedOn, d.FullBecause, d.StoredAs)));
        var data = copied["vdb"];
        Assert.Equal((first.RunId, 128L << 10, 0L), (data.BasedOn, data.BytesSent!.Value, data.BytesResent!.Value));
        Assert.Contains(data.StoredAs, new[] { FileClone.Reflink, FileClone.LocalCopy });
        Assert.Equal((await Bench.ManifestAsync(store, second)).Disks.Single(d => d.Target == "vdb").Digests, data.Digests);
        Assert.Null(data.ContentDigest);
    }

    [Fact]
    public async Task To_an_SSH_server_the_second_backup_sends_what_changed_and_is_verified_whole_on_the_server()
    {
        using var server = new TestSshServer();
        var root = server.DataFolder("incremental");
        await using var store = server.Store("good", root);
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        var firstSet = HashesOf(Path.Combine(root, Domain, first.RunId));
        Write(_b.Data, 20L * Files.MiB, 128 << 10, 0x5a);

        var (second, failed, _) = await BackUpAsync(store, new RecordingSink());

        Assert.Empty(failed);
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        var data = manifest.Disks.Single(d => d.Target == "vdb");
        Assert.Equal((first.RunId, 128L << 10, 0L), (data.BasedOn, data.BytesSent!.Value, data.BytesResent!.Value));
        Assert.Contains(data.StoredAs, new[] { FileClone.Reflink, FileClone.LocalCopy });
        Assert.Equal(0, manifest.Disks.Single(d => d.Target == "vda").BytesSent);
        // Verified on the server, whole: the segments that hold data by their digest, the others as zeros.
        Assert.StartsWith("read back whole on the server", data.VerifiedBy, StringComparison.Ordinal);
        Assert.Contains("segments of zeros read as zeros there", data.VerifiedBy, StringComparison.Ordinal);
        Assert.Matches("computed there with (python3|openssl|sha256sum)", data.VerifiedBy);
        Assert.True(Files.SameBytes(_b.Data, Path.Combine(root, Domain, second.RunId, "data1")));
        Assert.Equal(firstSet, HashesOf(Path.Combine(root, Domain, first.RunId)));
    }

    [Fact]
    public async Task On_an_SSH_server_a_base_that_rotted_in_a_segment_of_data_and_in_one_of_zeros_is_not_inherited()
    {
        using var server = new TestSshServer();
        var root = server.DataFolder("rotted");
        await using var store = server.Store("good", root);
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        var baseCopy = Path.Combine(root, Domain, first.RunId, "data1");
        FlipByte(baseCopy, 20L * Files.MiB + 7); // the segment from 16 to 32 MiB held only zeros
        FlipByte(baseCopy, 39L * Files.MiB + 5); // the last segment holds data (the disk's last bytes)

        var sink = new RecordingSink();
        var (second, failed, _) = await BackUpAsync(store, sink);

        Assert.Empty(failed);
        Assert.Contains(sink.Warnings, w => w.Contains("2 segment(s)", StringComparison.Ordinal) && w.Contains(first.RunId, StringComparison.Ordinal));
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        var data = manifest.Disks.Single(d => d.Target == "vdb");
        Assert.Equal(first.RunId, data.BasedOn);
        Assert.Equal(24L * Files.MiB, data.BytesResent); // 16 MiB of zeros and the last 8 MiB, written again
        Assert.True(Files.SameBytes(_b.Data, Path.Combine(root, Domain, second.RunId, "data1")), "the new copy inherited a rotted byte");
    }

    [Fact]
    public async Task On_an_SSH_server_every_rotted_segment_of_a_run_of_zeros_is_found_with_one_command_more_per_segment()
    {
        Write(_b.Data, 2L * Files.MiB, 4096, 0); // the disk's first 32 MiB now hold only zeros: one run of two zero segments
        using var server = new TestSshServer();
        var root = server.DataFolder("rotted-zeros");
        await using var plain = server.Store("good", root);
        var (first, _, _) = await BackUpAsync(plain, new RecordingSink());
        var baseCopy = Path.Combine(root, Domain, first.RunId, "data1");
        FlipByte(baseCopy, 5L * Files.MiB + 1);  // segment 0
        FlipByte(baseCopy, 20L * Files.MiB + 7); // segment 1, in the same run: found only when the server is asked again
        var readBacks = 0;
        await using var store = new HookedStore(plain, (_, writer) => writer)
        {
            BeforeReadBack = (path, _) =>
            {
                if (path.EndsWith($"{first.RunId}/data1", StringComparison.Ordinal))
                    Interlocked.Increment(ref readBacks);
                return Task.CompletedTask;
            },
        };
        var sink = new RecordingSink();

        var (second, failed, _) = await BackUpAsync(store, sink);

        Assert.Empty(failed);
        Assert.Contains(sink.Warnings, w => w.Contains("2 segment(s)", StringComparison.Ordinal) && w.Contains("first at offset 0)", StringComparison.Ordinal));
        var data = (await Bench.ManifestAsync(plain, second)).Disks.Single(d => d.Target == "vdb");
        Assert.Equal(first.RunId, data.BasedOn);
        Assert.Equal(32L * Files.MiB, data.BytesResent);
        Assert.True(Files.SameBytes(_b.Data, Path.Combine(root, Domain, second.RunId, "data1")), "the new copy inherited a rotted byte");
        // The base on the server: the digests of its data segment, the run of zeros, then the rest of the run after segment 0.
        Assert.Equal(3, readBacks);
    }

    // The clone is a server round trip at least (a whole sparse copy where the file system cannot clone): time on
    // the overlay if the copy waited for it. Each disk is being read and compared while its clone is still being made.
    [Fact]
    public async Task The_base_is_cloned_while_the_disk_is_read_not_before()
    {
        var store = new InterceptingStore(Destination);
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        Write(_b.Data, 20L * Files.MiB, 128 << 10, 0x5a);
        var sink = new RecordingSink();
        var readWhileCloning = new System.Collections.Concurrent.ConcurrentDictionary<string, bool>();
        store.BeforeClone = (_, newFile) =>
        {
            // A slow clone: it ends once the copy has compared some of its disk, or after 5 s.
            var target = RunJournal.TryLoad(Domain)!.Disks.Single(d => newFile.EndsWith("/" + BackupNames.Partial(d.SetFile), StringComparison.Ordinal)).Target;
            readWhileCloning[target] = SpinWait.SpinUntil(() =>
            {
                lock (sink.Progress)
                    return sink.Progress.Any(p => p.Activity == $"Copying {target} of {Domain}" && p.PercentComplete > 0);
            }, TimeSpan.FromSeconds(5));
        };

        var (second, failed, _) = await BackUpAsync(store, sink);

        Assert.Empty(failed);
        Assert.Equal(new Dictionary<string, bool> { ["vda"] = true, ["vdb"] = true }, readWhileCloning.ToDictionary());
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        Assert.All(manifest.Disks, d =>
        {
            Assert.Equal(first.RunId, d.BasedOn);
            Assert.Contains(d.StoredAs, new[] { FileClone.Reflink, FileClone.LocalCopy });
        });
        Assert.True(Files.SameBytes(_b.Data, SetPath(second, store, "data1")));
    }

    [Fact]
    public async Task The_base_is_read_back_before_the_snapshot_so_the_VM_is_not_on_its_overlays_while_the_destination_reads()
    {
        using var server = new TestSshServer();
        var root = server.DataFolder("read-back-first");
        await using var plain = server.Store("good", root);
        var (first, _, _) = await BackUpAsync(plain, new RecordingSink());
        FlipByte(Path.Combine(root, Domain, first.RunId, "data1"), 39L * Files.MiB + 5);
        // A slow backup server: each read-back command takes a second more. What the VM's disks were on meanwhile is noted.
        var onOverlays = new System.Collections.Concurrent.ConcurrentBag<bool>();
        await using var store = new HookedStore(plain, (_, writer) => writer)
        {
            BeforeReadBack = async (path, ct) =>
            {
                if (!path.Contains(first.RunId, StringComparison.Ordinal))
                    return;
                await Task.Delay(1000, ct);
                onOverlays.Add(_b.Host.Disks.Any(d => d.Backing is not null));
            },
        };
        // The second backup of the running VM: the preflight (the base chosen and read back), the snapshot, the copies.
        _b.Host.State = "running";
        var copy = new CopyService(_b.Tools, store, force: false, bandwidthMiBps: 0, throttleLimit: 2, new RecordingSink());
        var plan = await _b.PlanAsync(new CopyDestinationCheck(store, false, copy.Bases));
        var second = _b.Begin(plan);
        await new SnapshotService(_b.Tools).SnapshotAsync(second, plan, CancellationToken.None);
        Assert.All(_b.Host.Disks, d => Assert.NotNull(d.Backing)); // on its overlays now
        copy.Start(second, CancellationToken.None);
        while (await copy.NextAsync(second) is not null)
        {
        }

        Assert.Empty(await copy.FinishVerificationsAsync());
        Assert.NotEmpty(onOverlays);
        Assert.All(onOverlays, Assert.False);
        // The rot it found was sent again by the copy as it went: the set is Complete and does not inherit it.
        var manifest = await Bench.ManifestAsync(plain, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        Assert.Equal(8L * Files.MiB, manifest.Disks.Single(d => d.Target == "vdb").BytesResent);
        Assert.True(Files.SameBytes(_b.Data, Path.Combine(root, Domain, second.RunId, "data1")), "the new copy inherited the rotted byte");
    }

    [Fact]
    public async Task Base_found_rotted_only_after_the_copy_passed_it_gets_those_segments_sent_again_before_the_copy_is_done()
    {
        using var server = new TestSshServer();
        var root = server.DataFolder("late-rot");
        await using var plain = server.Store("good", root);
        var (first, _, _) = await BackUpAsync(plain, new RecordingSink());
        var baseCopy = Path.Combine(root, Domain, first.RunId, "data1");
        FlipByte(baseCopy, 39L * Files.MiB + 5); // the last segment, which the guest never changes
        var rotted = Sha256Of(baseCopy);
        // Copy-VmDisk in a pipeline of its own (no preflight): the base is read back while the disk is copied, and on
        // the server that read-back answers only once the new copy of the data disk was written whole.
        var copyWritten = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var store = new HookedStore(plain, (path, writer) => path.EndsWith("/data1.partial", StringComparison.Ordinal) ? new CompletionWatch(writer, copyWritten) : writer)
        {
            BeforeReadBack = async (path, ct) =>
            {
                if (path.EndsWith($"{first.RunId}/data1", StringComparison.Ordinal))
                    await copyWritten.Task.WaitAsync(ct);
            },
        };
        var sink = new RecordingSink();

        var (second, failed, _) = await BackUpAsync(store, sink, preflightBases: false);

        Assert.Empty(failed);
        Assert.Contains(sink.Warnings, w => w.Contains($"set {first.RunId}", StringComparison.Ordinal) && w.Contains("1 segment(s)", StringComparison.Ordinal));
        var manifest = await Bench.ManifestAsync(plain, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        var data = manifest.Disks.Single(d => d.Target == "vdb");
        Assert.Equal(first.RunId, data.BasedOn);
        Assert.Equal(8L * Files.MiB, data.BytesResent); // the last segment (32 to 40 MiB), written again after the copy
        Assert.True(Files.SameBytes(_b.Data, Path.Combine(root, Domain, second.RunId, "data1")), "the new copy inherited the rotted byte");
        Assert.Equal(rotted, Sha256Of(baseCopy));
    }

    [Fact]
    public async Task Base_that_cannot_be_read_back_while_the_copy_runs_gets_a_full_copy_that_says_why()
    {
        using var server = new TestSshServer();
        var root = server.DataFolder("unreadable-base");
        await using var plain = server.Store("good", root);
        var (first, _, _) = await BackUpAsync(plain, new RecordingSink());
        Write(_b.Data, 20L * Files.MiB, 128 << 10, 0x5a);
        var copyWritten = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var store = new HookedStore(plain, (path, writer) => path.EndsWith("/data1.partial", StringComparison.Ordinal) ? new CompletionWatch(writer, copyWritten) : writer)
        {
            BeforeReadBack = async (path, ct) =>
            {
                if (!path.EndsWith($"{first.RunId}/data1", StringComparison.Ordinal))
                    return;
                await copyWritten.Task.WaitAsync(ct);
                throw new IOException("Input/output error reading the base");
            },
        };

        var (second, failed, _) = await BackUpAsync(store, new RecordingSink(), preflightBases: false);

        Assert.Empty(failed);
        var manifest = await Bench.ManifestAsync(plain, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        var data = manifest.Disks.Single(d => d.Target == "vdb");
        Assert.Null(data.BasedOn);
        Assert.Equal("full", data.StoredAs);
        Assert.Contains($"the copy of vdb in set {first.RunId} could not be read back (Input/output error reading the base)", data.FullBecause, StringComparison.Ordinal);
        Assert.Equal(data.DataBytes, data.BytesSent);
        Assert.Equal(first.RunId, manifest.Disks.Single(d => d.Target == "vda").BasedOn); // the boot disk's base read back fine
        Assert.True(Files.SameBytes(_b.Data, Path.Combine(root, Domain, second.RunId, "data1")));
        Assert.Empty(Directory.GetFiles(Path.Combine(root, Domain, second.RunId), "*.partial"));
    }

    [Fact]
    public async Task A_base_is_read_back_after_those_of_its_VMs_disks_with_under_a_quarter_of_its_data()
    {
        // The data disk holds only zeros: its base has no data, the boot disk's has some.
        Write(_b.Data, 0, 40 << 20, 0);
        using var server = new TestSshServer();
        var root = server.DataFolder("read-back-order");
        await using var plain = server.Store("good", root);
        var (first, _, _) = await BackUpAsync(plain, new RecordingSink());
        var events = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await using var store = new HookedStore(plain, (_, writer) => writer)
        {
            BeforeReadBack = async (path, ct) =>
            {
                if (!path.Contains(first.RunId, StringComparison.Ordinal))
                    return;
                events.Enqueue($"{Path.GetFileName(path)} begins");
                await Task.Delay(400, ct); // time for another read-back to begin, were they run together
                events.Enqueue($"{Path.GetFileName(path)} ends");
            },
        };

        var (second, failed, _) = await BackUpAsync(store, new RecordingSink());

        Assert.Empty(failed);
        // The data disk's base (its last, partial segment by its digest and the rest as zeros, asked at once), then the boot disk's.
        Assert.Equal(["data1 begins", "data1 begins", "data1 ends", "data1 ends", "oda_vm1_boot begins", "oda_vm1_boot ends"], events);
        var manifest = await Bench.ManifestAsync(plain, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        Assert.All(manifest.Disks, d => Assert.Equal(first.RunId, d.BasedOn));
    }

    /// <summary>Says when a writer's copy was completed (written whole and synced).</summary>
    private sealed class CompletionWatch(IStoreFileWriter inner, TaskCompletionSource completed) : IStoreFileWriter
    {
        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) => inner.WriteAsync(offset, data, ct);

        public async Task CompleteAsync(long size, CancellationToken ct)
        {
            await inner.CompleteAsync(size, ct);
            completed.TrySetResult();
        }

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    [Fact]
    public async Task Full_copies_every_disk_in_full_and_says_why()
    {
        var store = new LocalBackupStore(Destination);
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        Write(_b.Data, 20L * Files.MiB, 128 << 10, 0x5a);
        var sink = new RecordingSink();

        var (second, failed, _) = await BackUpAsync(store, sink, full: true);

        Assert.Empty(failed);
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        Assert.All(manifest.Disks, d =>
        {
            Assert.Null(d.BasedOn);
            Assert.Equal("full", d.StoredAs);
            Assert.Equal("-Full was given", d.FullBecause);
            Assert.Equal(d.DataBytes, d.BytesSent);
        });
        Assert.True(Files.SameBytes(_b.Data, SetPath(second, store, "data1")));
        Assert.Contains(sink.Verbose, v => v.Contains("copied in full, because -Full was given", StringComparison.Ordinal));
        Assert.NotEqual(first.RunId, second.RunId);
    }

    [Fact]
    public async Task Disk_whose_size_changed_is_copied_in_full_and_the_other_disk_still_incrementally()
    {
        var store = new LocalBackupStore(Destination);
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        // The data disk was grown by 8 MiB (qemu-img resize): the earlier copy cannot be its base.
        using (var handle = File.OpenHandle(_b.Data, FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.SetLength(handle, 48L * Files.MiB);
        _b.Host.ImageInfo[_b.Data] = TestDomain.ImageInfoJson(_b.Data, "raw", 48L * Files.MiB, Files.AllocatedBytes(_b.Data));

        var (second, failed, _) = await BackUpAsync(store, new RecordingSink());

        Assert.Empty(failed);
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        var data = manifest.Disks.Single(d => d.Target == "vdb");
        Assert.Null(data.BasedOn);
        Assert.Equal("full", data.StoredAs);
        Assert.Contains("size", data.FullBecause, StringComparison.Ordinal);
        Assert.Equal(first.RunId, manifest.Disks.Single(d => d.Target == "vda").BasedOn);
        Assert.True(Files.SameBytes(_b.Data, SetPath(second, store, "data1")));
    }

    /// <summary>Makes the boot disk a qcow2 image of <paramref name="virtualSize"/> bytes, as libvirt and qemu-img
    /// info describe it (the engine copies its file's bytes whatever they are).</summary>
    private void BootIsQcow2(long virtualSize)
    {
        _b.Host.ImageInfo[_b.Boot] = TestDomain.ImageInfoJson(_b.Boot, "qcow2", virtualSize, Files.AllocatedBytes(_b.Boot));
        _b.Host.UseDisks(new TestDisk("vda", _b.Boot, "qcow2"), new TestDisk("vdb", _b.Data, "raw"));
    }

    [Fact]
    public async Task Qcow2_disk_whose_file_grew_is_based_on_the_first_set_and_only_its_changed_and_new_blocks_are_sent()
    {
        // The guest's writes allocate new qcow2 clusters at the end of the file: the file grows, the disk does not.
        BootIsQcow2(1L << 30);
        var store = new LocalBackupStore(Destination);
        var (first, failedFirst, _) = await BackUpAsync(store, new RecordingSink());
        Assert.Empty(failedFirst);
        Assert.Equal(1L << 30, (await Bench.ManifestAsync(store, first)).Disks.Single(d => d.Target == "vda").VirtualSizeBytes);
        var firstSet = HashesOf(SetPath(first, store));
        Write(_b.Boot, 4L * Files.MiB, (64 << 10) + 4096, 0x6b); // 64 KiB + 4 KiB of new clusters past the old end (4 MiB)
        Write(_b.Boot, Files.MiB, 4096, 0x7c);                     // and a table updated in place, in block 16
        var sink = new RecordingSink();

        var (second, failed, _) = await BackUpAsync(store, sink);

        Assert.Empty(failed);
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        var boot = manifest.Disks.Single(d => d.Target == "vda");
        Assert.Equal((first.RunId, (string?)null), (boot.BasedOn, boot.FullBecause));
        Assert.Contains(boot.StoredAs, new[] { FileClone.Reflink, FileClone.LocalCopy });
        Assert.Equal(4L * Files.MiB + (64 << 10) + 4096, boot.SizeBytes);
        // Block 16, and the new blocks 64 (whole) and 65 (4 KiB): nothing else of the file.
        Assert.Equal((64L << 10) + (64 << 10) + 4096, boot.BytesSent);
        Assert.True(boot.Verified);
        Assert.True(Files.SameBytes(_b.Boot, SetPath(second, store, "oda_vm1_boot")), "the new copy is not the disk's file");
        Assert.Contains(sink.Verbose, v => v.Contains($"vda of {Domain}: based on set {first.RunId}", StringComparison.Ordinal));
        Assert.Equal(firstSet, HashesOf(SetPath(first, store)));
    }

    [Fact]
    public async Task Qcow2_disk_whose_virtual_size_changed_is_copied_in_full_and_says_why()
    {
        BootIsQcow2(1L << 30);
        var store = new LocalBackupStore(Destination);
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        // qemu-img resize: the disk is now 2 GiB; its file did not change (qcow2 allocates nothing for it).
        BootIsQcow2(2L << 30);

        var (second, failed, _) = await BackUpAsync(store, new RecordingSink());

        Assert.Empty(failed);
        var manifest = await Bench.ManifestAsync(store, second);
        var boot = manifest.Disks.Single(d => d.Target == "vda");
        Assert.Null(boot.BasedOn);
        Assert.Equal("full", boot.StoredAs);
        Assert.Equal($"the last Complete set {first.RunId} holds vda at another virtual size ({1L << 30} bytes; the disk now has {2L << 30})", boot.FullBecause);
        Assert.Equal(first.RunId, manifest.Disks.Single(d => d.Target == "vdb").BasedOn);
        Assert.True(Files.SameBytes(_b.Boot, SetPath(second, store, "oda_vm1_boot")));
    }

    [Fact]
    public async Task Segment_that_rotted_in_the_base_is_sent_again_counted_and_not_inherited()
    {
        var store = new LocalBackupStore(Destination);
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        // A byte of the first set's copy of the data disk rots, in the segment at 32 MiB, which the guest never changes.
        var baseCopy = SetPath(first, store, "data1");
        FlipByte(baseCopy, 39L * Files.MiB + 5);
        var rotted = Sha256Of(baseCopy);

        var sink = new RecordingSink();
        var (second, failed, _) = await BackUpAsync(store, sink);

        Assert.Empty(failed);
        // The copy warned: the earlier set is damaged, named, with the way to check it.
        Assert.Contains(sink.Warnings, w => w.Contains($"set {first.RunId}", StringComparison.Ordinal) && w.Contains("Test-KvmBackup", StringComparison.Ordinal));
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        var data = manifest.Disks.Single(d => d.Target == "vdb");
        Assert.Equal(first.RunId, data.BasedOn);
        // The last segment (32 to 40 MiB) is sent whole, though no block of it changed on the disk.
        Assert.Equal(8L * Files.MiB, data.BytesResent);
        Assert.Equal(8L * Files.MiB, data.BytesSent);
        Assert.True(Files.SameBytes(_b.Data, SetPath(second, store, "data1")), "the new copy inherited the rotted byte");
        Assert.Equal(rotted, Sha256Of(baseCopy)); // the base is read, never mended or written
    }

    [Fact]
    public async Task Failure_during_an_incremental_copy_leaves_the_base_untouched_and_no_partial_file()
    {
        var store = new LocalBackupStore(Destination);
        var (first, _, _) = await BackUpAsync(store, new RecordingSink());
        var firstSet = HashesOf(SetPath(first, store));
        Write(_b.Data, 20L * Files.MiB, 128 << 10, 0x5a);

        // The boot disk's file goes away after the preflight: its copy fails once the clone of its base is made.
        var (second, failed, _) = await BackUpAsync(store, new RecordingSink(), beforeCopy: _ => File.Delete(_b.Boot));

        var error = Assert.Single(failed);
        Assert.Equal(ErrorIds.CopyFailed, error.ErrorId);
        var manifest = await Bench.ManifestAsync(store, second);
        Assert.Equal(BackupSetStatus.Incomplete, manifest.Status);
        Assert.Empty(Directory.GetFiles(SetPath(second, store), "*.partial"));
        Assert.Equal(firstSet, HashesOf(SetPath(first, store)));
    }

    [Fact]
    public async Task Destination_that_cannot_clone_gets_a_full_copy_that_says_why()
    {
        var local = new LocalBackupStore(Destination);
        var (first, _, _) = await BackUpAsync(local, new RecordingSink());
        var sink = new RecordingSink();

        var (second, failed, _) = await BackUpAsync(new CannotCloneStore(local), sink);

        Assert.Empty(failed);
        var manifest = await Bench.ManifestAsync(local, second);
        Assert.Equal(BackupSetStatus.Complete, manifest.Status);
        Assert.All(manifest.Disks, d =>
        {
            Assert.Null(d.BasedOn);
            Assert.Equal("full", d.StoredAs);
            Assert.Contains($"the copy of set {first.RunId} could not be cloned at the destination", d.FullBecause, StringComparison.Ordinal);
            Assert.Equal(d.DataBytes, d.BytesSent);
        });
        Assert.True(Files.SameBytes(_b.Data, SetPath(second, local, "data1")));
        Assert.Empty(Directory.GetFiles(SetPath(second, local), "*.partial"));
    }

    // The clone is made while the disk is read: one that fails stops that reading at once, so the disk is read
    // once more in full, not after a whole read in vain. At 20 MiB/s the vdisk's 40 MiB of data take 2 s to read;
    // nothing changed, so the copy has nothing to write that would find the failure sooner.
    [Fact]
    public async Task A_clone_that_fails_stops_the_reading_at_once_and_the_disk_is_copied_in_full()
    {
        Write(_b.Data, 0, 40 * Files.MiB, 0x33);
        var local = new LocalBackupStore(Destination);
        var (first, _, _) = await BackUpAsync(local, new RecordingSink());

        var (second, failed, _) = await BackUpAsync(new CannotCloneStore(local), new RecordingSink(), bandwidthMiBps: 20);

        Assert.Empty(failed);
        var data = (await Bench.ManifestAsync(local, second)).Disks.Single(d => d.Target == "vdb");
        Assert.Contains($"the copy of set {first.RunId} could not be cloned at the destination", data.FullBecause, StringComparison.Ordinal);
        var record = second.Record.Disk("vdb");
        var took = record.CopiedUtc!.Value - record.CopyStartedUtc!.Value;
        Assert.True(took < TimeSpan.FromSeconds(3.2), $"the copy of vdb took {took.TotalSeconds:0.0} s: the disk was read twice");
        Assert.True(took > TimeSpan.FromSeconds(1.8), $"the copy of vdb took {took.TotalSeconds:0.0} s: it was not throttled, so this measures nothing");
        Assert.True(Files.SameBytes(_b.Data, SetPath(second, local, "data1")));
    }

    /// <summary>A store on a file system, or a server, that can neither clone nor write into an existing file.</summary>
    private sealed class CannotCloneStore(LocalBackupStore inner) : IBackupStore
    {
        public string Location => inner.Location;
        public bool IsRemote => inner.IsRemote;
        public string Describe(string relativePath) => inner.Describe(relativePath);
        public Task CheckWritableAsync(CancellationToken ct) => inner.CheckWritableAsync(ct);
        public Task<long> GetFreeBytesAsync(CancellationToken ct) => inner.GetFreeBytesAsync(ct);
        public Task<StoreEntry?> GetEntryAsync(string relativePath, CancellationToken ct) => inner.GetEntryAsync(relativePath, ct);
        public Task<IReadOnlyList<StoreEntry>> ListAsync(string relativeFolder, CancellationToken ct) => inner.ListAsync(relativeFolder, ct);
        public Task CreateFolderAsync(string relativePath, CancellationToken ct) => inner.CreateFolderAsync(relativePath, ct);
        public Task WriteSmallFileAsync(string relativePath, byte[] content, CancellationToken ct) => inner.WriteSmallFileAsync(relativePath, content, ct);
        public Task<byte[]> ReadSmallFileAsync(string relativePath, CancellationToken ct) => inner.ReadSmallFileAsync(relativePath, ct);
        public Task<IStoreFileWriter> CreateFileAsync(string relativePath, CancellationToken ct) => inner.CreateFileAsync(relativePath, ct);
        public Task<IStoreFileReader> OpenReadAsync(string relativePath, CancellationToken ct) => inner.OpenReadAsync(relativePath, ct);
        public Task RenameAsync(string from, string to, CancellationToken ct) => inner.RenameAsync(from, to, ct);
        public Task DeleteAsync(string relativePath, bool recursive, CancellationToken ct) => inner.DeleteAsync(relativePath, recursive, ct);
        public Task<IReadOnlyList<string>> SegmentDigestsAsync(string relativePath, long segmentSize, IReadOnlyList<long> segmentIndexes, CancellationToken ct) =>
            inner.SegmentDigestsAsync(relativePath, segmentSize, segmentIndexes, ct);
        public Task<IReadOnlyList<long>> FindNonZeroAsync(string relativePath, IReadOnlyList<(long Offset, long Length)> ranges, CancellationToken ct) =>
            inner.FindNonZeroAsync(relativePath, ranges, ct);
        public Task<StoreOwnership?> GetOwnershipAsync(string relativePath, CancellationToken ct) => inner.GetOwnershipAsync(relativePath, ct);
        public Task<uint> GetWriterIdAsync(CancellationToken ct) => inner.GetWriterIdAsync(ct);
        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    private static void FlipByte(string path, long offset)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        var b = new byte[1];
        RandomAccess.Read(handle, b, offset);
        b[0] = (byte)(b[0] == 0x55 ? 0x56 : 0x55);
        RandomAccess.Write(handle, b, offset);
        RandomAccess.FlushToDisk(handle);
    }
}
