using System.Text.Json;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>What the run writes down for later (the set's manifest, the journal) and when a pipeline may hand its
/// objects on: cases that the Stryker run of the safety logic (build.ps1 -Task Mutate) found untested; each test
/// names the mutant it kills (docs/mutation-survivors.md). Status and reason are read from backup.json as a user
/// reads them.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class RunRecordKeepingTests : IDisposable
{
    private readonly Bench _b = new();
    private readonly StateDirectoryFixture _state;

    public RunRecordKeepingTests(StateDirectoryFixture state)
    {
        _state = state;
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
    }

    public void Dispose() => _b.Dispose();

    private static JsonElement BackupJson(string storeRoot, BackupRun run) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(storeRoot, run.DomainName, run.RunId, "backup.json"))).RootElement;

    // Format OdaKvmBackup/3: Test-KvmBackup and the next incremental copy find a copy's digest list by the SHA-256
    // the manifest records, and Get-KvmBackup shows how it was stored; Repair-KvmBackup closes the set from the journal.
    [Fact]
    public async Task A_copys_digest_list_and_counters_reach_the_sets_manifest_and_the_journal()
    {
        var run = await _b.SnapshottedAsync();
        var root = _b.Temp.Folder("backups");
        var store = new LocalBackupStore(root);
        await run.EnsureSetAsync(store, false, CancellationToken.None);
        run.BeginCopy("vda", store);
        run.RecordCopyStart("vda", "20261201-010203", null);
        var copy = CopyResults.Of(32L * Files.MiB, 4096, sent: 65536, resent: 4096);
        run.RecordCopied("vda", copy, "reflink", 8192);
        await run.RecordVerifiedAsync("vda", "read back on the server", CancellationToken.None);

        var vda = BackupJson(root, run).GetProperty("Disks").EnumerateArray().Single(d => d.GetProperty("Target").GetString() == "vda");
        Assert.Equal(copy.Digests.Sha256, vda.GetProperty("Digests").GetString());
        Assert.Equal("20261201-010203", vda.GetProperty("BasedOn").GetString());
        Assert.Equal("reflink", vda.GetProperty("StoredAs").GetString());
        Assert.Equal(32L * Files.MiB, vda.GetProperty("BytesRead").GetInt64());
        Assert.Equal(65536, vda.GetProperty("BytesSent").GetInt64());
        Assert.Equal(8192, vda.GetProperty("BytesCloned").GetInt64());
        Assert.Equal(4096, vda.GetProperty("BytesResent").GetInt64());
        Assert.True(!vda.TryGetProperty("ContentDigest", out var content) || content.ValueKind == JsonValueKind.Null, "a new set has no content digest");
        Assert.True(!vda.TryGetProperty("SegmentDigests", out var segments) || segments.ValueKind == JsonValueKind.Null, "a new set has no segment digests");
        var journal = RunJournal.TryLoad(Bench.Domain)!.Disks.Single(d => d.Target == "vda");
        Assert.Equal((copy.Digests.Sha256, "20261201-010203", "reflink", 65536L, 4096L), (journal.Digests, journal.BasedOn, journal.StoredAs, journal.BytesSent!.Value, journal.BytesResent!.Value));
    }

    // The journal says on which set a copy is based, or why it is full, before the copy's file is made.
    [Fact]
    public async Task The_journal_says_how_a_copy_starts_before_its_file_is_made()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(_b.Temp.Folder("backups"));
        await run.EnsureSetAsync(store, false, CancellationToken.None);
        run.BeginCopy("vdb", store);

        run.RecordCopyStart("vdb", null, "-Full was given");

        var journal = RunJournal.TryLoad(Bench.Domain)!.Disks.Single(d => d.Target == "vdb");
        Assert.Null(journal.BasedOn);
        Assert.Equal("-Full was given", journal.FullBecause);
    }

    // Kills BackupRun.cs:68 (Record.SetFolder is null || Record.FailureReason is not null -> &&): a run that made no set
    // (nothing copied yet: New-KvmDiskSnapshot | Invoke-BlockCommit) has no status to wait for, so the pipeline's
    // last step hands its objects on at once instead of holding them to its end.
    [Fact]
    public async Task A_run_without_a_set_has_nothing_to_wait_for()
    {
        var run = await _b.SnapshottedAsync();

        Assert.True(run.SetSettled);
    }

    // Kills BackupRun.cs:250 (_store is null || Record.SetFolder is null -> &&): the set's folder could not be made
    // (the journal named it first), so the run is given up with no store to mark; the VM must still go back and the
    // user be told, not a NullReferenceException out of the rollback.
    [Fact]
    public async Task A_set_whose_folder_cannot_be_made_does_not_stop_the_rollback()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(_b.Temp.Folder("backups"))
        {
            BeforeCreateFolder = _ => throw new IOException("No space left on device"),
        };
        await Assert.ThrowsAsync<IOException>(() => run.EnsureSetAsync(store, false, CancellationToken.None));
        Assert.NotNull(RunJournal.TryLoad(Bench.Domain)!.SetFolder); // named before it was made

        var outcome = await run.FailAsync("the set could not be made", NullSink.Instance);

        Assert.True(outcome.BackOnOwnDisks);
        Assert.Equal([_b.Boot, _b.Data], _b.Host.Disks.Select(d => d.Source));
        Assert.Null(RunJournal.TryLoad(Bench.Domain));
    }

    // Kills BackupRun.cs:324 (disk.State < DiskState.Committed -> <=): a disk recorded as committed again (a second
    // Invoke-BlockCommit of the same objects) keeps the time it spent on its overlay, as its pipeline object shows it.
    [Fact]
    public async Task A_disk_committed_twice_keeps_the_time_it_spent_on_its_overlay()
    {
        var run = await _b.SnapshottedAsync();
        run.BeginCommit("vda");
        run.RecordCommitted("vda");
        var first = run.Disks[0].TimeOnOverlay;
        Assert.NotNull(first);
        await Task.Delay(20);

        run.BeginCommit("vda");
        run.RecordCommitted("vda");

        Assert.Equal(first, run.Disks[0].TimeOnOverlay);
        Assert.Equal(first, RunJournal.TryLoad(Bench.Domain)!.Disks[0].CommittedUtc - RunJournal.TryLoad(Bench.Domain)!.SnapshotUtc);
    }

    // Kills BackupRun.cs:158 (the undo's _copying.Remove(target) removed) and BackupRun.cs:510 and :511 (SaveAhead's
    // undo() and throw; removed): a copy the journal could not record is refused with JournalWriteFailed and
    // leaves nothing behind, so that it can be started again once the state folder is fixed.
    [Fact]
    public async Task A_copy_the_journal_could_not_record_can_be_started_again_once_the_state_folder_is_fixed()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(_b.Temp.Folder("backups"));
        _state.BreakJournalFolder();

        var ex = Assert.Throws<BackupException>(() => run.BeginCopy("vda", store));
        Assert.Equal(ErrorIds.JournalWriteFailed, ex.ErrorId);
        Assert.Null(run.Record.Disks[0].CopyStartedUtc);

        File.Delete(StateDirectory.JournalDirectory);
        Directory.Move(StateDirectory.JournalDirectory + ".aside", StateDirectory.JournalDirectory);
        run.BeginCopy("vda", store);
        Assert.NotNull(RunJournal.TryLoad(Bench.Domain)!.Disks[0].CopyStartedUtc);
    }

    // Kills BackupRun.cs:522 (throw RunErrors.RunClosed removed in EnsureAttached): a step of a run that is over,
    // taken while another run of the domain holds its lock, says the run is closed (its objects are stale), not
    // that a backup is in progress.
    [Fact]
    public async Task A_step_of_a_run_that_is_over_says_so_while_another_run_holds_the_domain()
    {
        var run = await _b.SnapshottedAsync();
        await run.FailAsync("the test stopped it", NullSink.Instance);
        using var other = DomainLock.TryAcquire(Bench.Domain);
        Assert.NotNull(other);

        var ex = Assert.Throws<BackupException>(() => run.BeginCopy("vda", new LocalBackupStore(_b.Temp.Folder("backups"))));

        Assert.Equal(ErrorIds.RunClosed, ex.ErrorId);
    }
}
