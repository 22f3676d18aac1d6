using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

[Collection(StateDirectoryCollection.Name)]
public sealed class JournalAndLockTests
{
    private readonly StateDirectoryFixture _state;

    public JournalAndLockTests(StateDirectoryFixture state)
    {
        _state = state;
        _state.Reset();
    }

    private static readonly string[] Names = ["linux_vm", "vm with spaces", "a/b", "..", "../../etc/passwd", "-x", "a;b $(rm -rf /)", "50%", "a.json", "é-vm"];

    public static TheoryData<string> OddNames => new(Names);

    private static JournalEntry Entry(string domain, string runId = "20250101-020304") => new()
    {
        DomainName = domain,
        RunId = runId,
        SnapshotName = OverlayNaming.DefaultSnapshotName,
        Consistency = BackupConsistency.CrashConsistent,
        Phase = JournalPhase.OnOverlays,
        BackupSet = "/backup/linux_vm/" + runId,
        Disks =
        [
            new JournalDisk { Target = "vda", Source = "/x/linux_boot", Format = "qcow2", Overlay = "/x/linux_boot.FILE_STAGE_BACKUP.TEMP", Committed = true },
            new JournalDisk { Target = "vdb", Source = "/x/disco", Format = "raw", Overlay = "/x/disco.FILE_STAGE_BACKUP.TEMP" },
        ],
    };

    [Fact]
    public void Journal_lives_under_the_state_directory_from_the_environment()
    {
        Assert.Equal(Path.Combine(_state.Root, "journal"), StateDirectory.JournalDirectory);
        Assert.Equal(Path.Combine(_state.Root, "locks"), StateDirectory.LockDirectory);
    }

    [Theory]
    [MemberData(nameof(OddNames))]
    public void Saved_journal_loads_back(string domain)
    {
        var entry = Entry(domain);

        Journal.Save(entry);
        var loaded = Journal.TryLoad(domain);

        Assert.NotNull(loaded);
        Assert.Equal(domain, loaded.DomainName);
        Assert.Equal(entry.RunId, loaded.RunId);
        Assert.Equal(entry.SnapshotName, loaded.SnapshotName);
        Assert.Equal(BackupConsistency.CrashConsistent, loaded.Consistency);
        Assert.Equal(JournalPhase.OnOverlays, loaded.Phase);
        Assert.Equal(entry.BackupSet, loaded.BackupSet);
        Assert.Equal(Environment.ProcessId, loaded.ProcessId);
        Assert.Equal(entry.StartedUtc, loaded.StartedUtc);
        Assert.Equal(["vda", "vdb"], loaded.Disks.Select(d => d.Target));
        Assert.Equal([true, false], loaded.Disks.Select(d => d.Committed));
        Assert.Equal("/x/disco.FILE_STAGE_BACKUP.TEMP", loaded.Disks[1].Overlay);
        Assert.Equal("raw", loaded.Disks[1].Format);
    }

    [Theory]
    [MemberData(nameof(OddNames))]
    public void Journal_and_lock_files_of_any_name_stay_directly_in_their_folders(string domain)
    {
        Journal.Save(Entry(domain));
        using var held = DomainLock.TryAcquire(domain);

        Assert.Equal(StateDirectory.JournalDirectory, Path.GetDirectoryName(Path.GetFullPath(Journal.PathFor(domain))));
        Assert.Single(Directory.GetFiles(StateDirectory.JournalDirectory));
        Assert.Single(Directory.GetFiles(StateDirectory.LockDirectory));
        Assert.Equal(["journal", "locks"], Directory.GetDirectories(_state.Root).Select(d => Path.GetFileName(d)).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void LoadAll_returns_every_domain_by_its_real_name()
    {
        foreach (var name in Names)
            Journal.Save(Entry(name));

        var loaded = Journal.LoadAll().Select(e => e.DomainName).Order(StringComparer.Ordinal).ToList();

        Assert.Equal(Names.Order(StringComparer.Ordinal), loaded);
    }

    [Fact]
    public void LoadAll_of_a_host_that_never_ran_a_backup_is_empty()
    {
        Assert.Empty(Journal.LoadAll());
    }

    [Fact]
    public void Delete_removes_the_journal_of_that_domain_only()
    {
        Journal.Save(Entry("vm with spaces"));
        Journal.Save(Entry("vm"));

        Journal.Delete("vm with spaces");

        Assert.Null(Journal.TryLoad("vm with spaces"));
        Assert.NotNull(Journal.TryLoad("vm"));
        Assert.Equal(["vm"], Journal.LoadAll().Select(e => e.DomainName));
    }

    [Fact]
    public void Saving_again_replaces_the_journal()
    {
        Journal.Save(Entry("linux_vm", "20250101-000000"));
        Journal.Save(Entry("linux_vm", "20250102-000000"));

        Assert.Equal("20250102-000000", Journal.TryLoad("linux_vm")!.RunId);
        Assert.Single(Directory.GetFiles(StateDirectory.JournalDirectory));
    }

    [Fact]
    public void Unreadable_journal_is_skipped_not_thrown()
    {
        Journal.Save(Entry("good"));
        File.WriteAllText(Journal.PathFor("broken"), "{ \"DomainName\": \"bro");

        Assert.Null(Journal.TryLoad("broken"));
        Assert.Equal(["good"], Journal.LoadAll().Select(e => e.DomainName));
    }

    [Fact]
    public void TryLoad_of_an_unknown_domain_is_null()
    {
        Assert.Null(Journal.TryLoad("never-backed-up"));
    }

    [Theory]
    [MemberData(nameof(OddNames))]
    public void Second_lock_on_the_same_domain_is_refused_while_the_first_is_held(string domain)
    {
        using var first = DomainLock.TryAcquire(domain);
        Assert.NotNull(first);
        Assert.Equal(domain, first.DomainName);

        using var second = DomainLock.TryAcquire(domain);

        Assert.Null(second);
    }

    [Fact]
    public void Lock_is_free_again_after_Dispose()
    {
        var first = DomainLock.TryAcquire("linux_vm");
        Assert.NotNull(first);
        first.Dispose();

        using var second = DomainLock.TryAcquire("linux_vm");

        Assert.NotNull(second);
    }

    [Fact]
    public void Locks_of_two_domains_do_not_block_each_other()
    {
        using var a = DomainLock.TryAcquire("linux_vm");
        using var b = DomainLock.TryAcquire("linux_vm2");

        Assert.NotNull(a);
        Assert.NotNull(b);
    }

    [Fact]
    public void Finishing_a_run_deletes_its_journal_and_releases_the_lock()
    {
        var entry = Entry("linux_vm");
        Journal.Save(entry);
        var run = new BackupRun(entry, "<domain/>", DomainLock.TryAcquire("linux_vm"));

        run.Finish();

        Assert.True(run.Finished);
        Assert.Null(Journal.TryLoad("linux_vm"));
        using var again = DomainLock.TryAcquire("linux_vm");
        Assert.NotNull(again);
    }

    [Fact]
    public void Finishing_a_cold_run_on_a_host_that_never_wrote_a_journal_releases_the_lock()
    {
        // A cold backup writes no journal: on a fresh host the journal folder does not exist yet.
        var entry = new JournalEntry
        {
            DomainName = "cold_vm",
            RunId = "20250101-020304",
            SnapshotName = OverlayNaming.DefaultSnapshotName,
            Consistency = BackupConsistency.Cold,
            Disks = [new JournalDisk { Target = "vda", Source = "/x/linux_boot", Format = "qcow2" }],
        };
        var run = new BackupRun(entry, "<domain/>", DomainLock.TryAcquire("cold_vm"));
        run.Register();
        Assert.False(Directory.Exists(StateDirectory.JournalDirectory));

        var thrown = Record.Exception(run.Finish);

        using var again = DomainLock.TryAcquire("cold_vm");
        Assert.True(again is not null, $"the domain lock is still held after Finish ({thrown?.GetType().Name}: {thrown?.Message})");
        Assert.Null(thrown);
        Assert.Null(BackupRun.FindActive("cold_vm"));
    }

    [Fact]
    public void Committing_the_last_disk_ends_the_run()
    {
        var entry = Entry("linux_vm");
        foreach (var disk in entry.Disks)
            disk.Committed = false;
        Journal.Save(entry);
        var run = new BackupRun(entry, "<domain/>", DomainLock.TryAcquire("linux_vm"));

        run.MarkCommitted("vda");
        Assert.False(run.Finished);
        Assert.True(run.OnOverlays);
        Assert.Equal([true, false], Journal.TryLoad("linux_vm")!.Disks.Select(d => d.Committed));
        Assert.Null(DomainLock.TryAcquire("linux_vm"));

        run.MarkCommitted("vdb");

        Assert.True(run.Finished);
        Assert.False(run.OnOverlays);
        Assert.Null(Journal.TryLoad("linux_vm"));
        using var again = DomainLock.TryAcquire("linux_vm");
        Assert.NotNull(again);
    }
}
