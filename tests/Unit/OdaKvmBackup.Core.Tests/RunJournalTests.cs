using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The journal (RunJournal, RunRecord) and the per-domain lock (DomainLock) on a temp state folder.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class RunJournalTests
{
    private readonly StateDirectoryFixture _state;

    public RunJournalTests(StateDirectoryFixture state)
    {
        _state = state;
        _state.Reset();
    }

    private static readonly string[] Names = ["linux_vm", "vm with spaces", "a/b", "..", "../../etc/passwd", "-x", "a;b $(rm -rf /)", "50%", "a.json", "é-vm"];

    public static TheoryData<string> OddNames => new(Names);

    internal static RunRecord Record(string domain, string runId = "20250101-020304") => new()
    {
        DomainName = domain,
        RunId = runId,
        SnapshotName = BackupNames.DefaultSnapshotName,
        Consistency = BackupConsistency.CrashConsistent,
        Phase = RunPhase.OnOverlays,
        Destination = "/backup",
        SetFolder = "linux_vm/" + runId,
        DomainXml = "<domain><name>x</name></domain>",
        Disks =
        [
            new DiskRecord { Target = "vda", Source = "/x/linux_boot", Format = "qcow2", Overlay = "/x/linux_boot.FILE_STAGE_BACKUP.TEMP", SetFile = "linux_boot", RetainedName = "linux_boot.FILE_STAGE_BACKUP.TEMP", State = BackupStage.Committed },
            new DiskRecord { Target = "vdb", Source = "/x/disco", Format = "raw", Overlay = "/x/disco.FILE_STAGE_BACKUP.TEMP", SetFile = "disco", RetainedName = "disco.FILE_STAGE_BACKUP.TEMP", State = BackupStage.Copied, ContentDigest = new string('b', 64), Verified = true },
        ],
        ExcludedDisks = [new ExcludedDisk("vdc", "/x/shared", "not piped to New-KvmDiskSnapshot")],
    };

    [Fact]
    public void Journal_and_locks_live_under_the_state_directory_from_the_environment()
    {
        Assert.Equal(Path.Combine(_state.Root, "journal"), StateDirectory.JournalDirectory);
        Assert.Equal(Path.Combine(_state.Root, "locks"), StateDirectory.LockDirectory);
    }

    [Theory]
    [MemberData(nameof(OddNames))]
    public void Saved_journal_loads_back_with_every_field(string domain)
    {
        var record = Record(domain);

        RunJournal.Save(record);
        var loaded = RunJournal.TryLoad(domain);

        Assert.NotNull(loaded);
        Assert.Equal(domain, loaded.DomainName);
        Assert.Equal(record.RunId, loaded.RunId);
        Assert.Equal(record.SnapshotName, loaded.SnapshotName);
        Assert.Equal(BackupConsistency.CrashConsistent, loaded.Consistency);
        Assert.Equal(RunPhase.OnOverlays, loaded.Phase);
        Assert.Equal("/backup", loaded.Destination);
        Assert.Equal(record.SetFolder, loaded.SetFolder);
        Assert.Equal(record.DomainXml, loaded.DomainXml);
        Assert.Equal(Environment.ProcessId, loaded.ProcessId);
        Assert.Equal(record.StartedUtc, loaded.StartedUtc);
        Assert.Equal(["vda", "vdb"], loaded.Disks.Select(d => d.Target));
        Assert.Equal([BackupStage.Committed, BackupStage.Copied], loaded.Disks.Select(d => d.State));
        Assert.Equal("/x/disco.FILE_STAGE_BACKUP.TEMP", loaded.Disks[1].Overlay);
        Assert.Equal(("raw", "disco", "disco.FILE_STAGE_BACKUP.TEMP"), (loaded.Disks[1].Format, loaded.Disks[1].SetFile, loaded.Disks[1].RetainedName));
        Assert.Equal((new string('b', 64), true), (loaded.Disks[1].ContentDigest, loaded.Disks[1].Verified));
        Assert.Equal(new ExcludedDisk("vdc", "/x/shared", "not piped to New-KvmDiskSnapshot"), Assert.Single(loaded.ExcludedDisks));
    }

    [Fact]
    public void Phase_and_disk_states_are_written_as_words_so_that_a_person_can_read_the_journal()
    {
        RunJournal.Save(Record("linux_vm"));

        var text = File.ReadAllText(StateDirectory.JournalPath("linux_vm"));
        Assert.Contains("\"OnOverlays\"", text, StringComparison.Ordinal);
        Assert.Contains("\"Committed\"", text, StringComparison.Ordinal);
        Assert.Contains("\"CrashConsistent\"", text, StringComparison.Ordinal);
    }

    /// <summary>A journal as the version before one stage vocabulary wrote it (the disk state "OnOverlay", which
    /// is now Snapshotted), left by a run that was killed before the upgrade.</summary>
    internal const string EarlierJournal = """
        {
          "DomainName": "linux_vm",
          "RunId": "20250101-020304",
          "SnapshotName": "FILE_STAGE_BACKUP.TEMP",
          "Consistency": "Quiesced",
          "ProcessId": 4242,
          "HostName": "oda1",
          "StartedUtc": "2025-01-01T02:03:01.5Z",
          "SnapshotUtc": "2025-01-01T02:03:04Z",
          "Phase": "OnOverlays",
          "SnapshotOutcomeUnknown": false,
          "FailureReason": null,
          "SetIncompleteReason": null,
          "Destination": "/backup",
          "SetFolder": "linux_vm/20250101-020304",
          "DomainXml": "<domain><name>linux_vm</name></domain>",
          "Disks": [
            { "Target": "vda", "Source": "/x/linux_boot", "Format": "qcow2", "Overlay": "/x/linux_boot.FILE_STAGE_BACKUP.TEMP", "SetFile": "linux_boot", "RetainedName": "linux_boot.FILE_STAGE_BACKUP.TEMP", "State": "OnOverlay", "VirtualSizeBytes": null, "SizeBytes": null, "DataBytes": null, "ContentDigest": null, "SegmentDigests": null, "Verified": false, "VerifiedBy": null, "RetainedOverlay": null, "CopyStartedUtc": null, "CopiedUtc": null, "CommitStartedUtc": null, "CommittedUtc": null },
            { "Target": "vdb", "Source": "/x/disco", "Format": "raw", "Overlay": "/x/disco.FILE_STAGE_BACKUP.TEMP", "SetFile": "disco", "RetainedName": "disco.FILE_STAGE_BACKUP.TEMP", "State": "Copied", "VirtualSizeBytes": 1048576, "SizeBytes": 1048576, "DataBytes": 4096, "ContentDigest": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "SegmentDigests": null, "Verified": true, "VerifiedBy": "read back", "RetainedOverlay": null, "CopyStartedUtc": "2025-01-01T02:03:05Z", "CopiedUtc": "2025-01-01T02:03:09Z", "CommitStartedUtc": null, "CommittedUtc": null },
            { "Target": "vdc", "Source": "/x/extra", "Format": "raw", "Overlay": "/x/extra.FILE_STAGE_BACKUP.TEMP", "SetFile": "extra", "RetainedName": "extra.FILE_STAGE_BACKUP.TEMP", "State": "Committed", "VirtualSizeBytes": null, "SizeBytes": null, "DataBytes": null, "ContentDigest": null, "SegmentDigests": null, "Verified": false, "VerifiedBy": null, "RetainedOverlay": null, "CopyStartedUtc": null, "CopiedUtc": null, "CommitStartedUtc": null, "CommittedUtc": null }
          ],
          "ExcludedDisks": []
        }
        """;

    [Fact]
    public void Journal_the_earlier_version_wrote_is_read_with_OnOverlay_as_Snapshotted_and_written_back_with_todays_words()
    {
        Directory.CreateDirectory(StateDirectory.JournalDirectory);
        File.WriteAllText(StateDirectory.JournalPath("linux_vm"), EarlierJournal);

        var loaded = RunJournal.TryLoad("linux_vm")!;

        Assert.Equal([BackupStage.Snapshotted, BackupStage.Copied, BackupStage.Committed], loaded.Disks.Select(d => d.State));
        Assert.Equal((RunPhase.OnOverlays, "/backup", true), (loaded.Phase, loaded.Destination, loaded.Disks[1].Verified));
        RunJournal.Save(loaded);
        var text = File.ReadAllText(StateDirectory.JournalPath("linux_vm"));
        Assert.Contains("\"State\": \"Snapshotted\"", text, StringComparison.Ordinal);
        Assert.DoesNotContain("OnOverlay\"", text, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("\"OnOverlays\"")] // the run's phase, not a disk's stage
    [InlineData("\"snapshotted\"")]
    [InlineData("1")]
    [InlineData("null")]
    public void Journal_with_a_disk_state_no_version_wrote_is_unreadable_not_guessed(string state)
    {
        Directory.CreateDirectory(StateDirectory.JournalDirectory);
        File.WriteAllText(StateDirectory.JournalPath("linux_vm"), EarlierJournal.Replace("\"State\": \"OnOverlay\"", "\"State\": " + state, StringComparison.Ordinal));

        var ex = Assert.Throws<BackupException>(() => RunJournal.TryLoad("linux_vm"));

        Assert.Equal(ErrorIds.JournalUnreadable, ex.ErrorId);
    }

    [Theory]
    [MemberData(nameof(OddNames))]
    public void Journal_and_lock_files_of_any_name_stay_directly_in_their_folders(string domain)
    {
        RunJournal.Save(Record(domain));
        using var held = DomainLock.TryAcquire(domain);

        Assert.Equal(StateDirectory.JournalDirectory, Path.GetDirectoryName(Path.GetFullPath(StateDirectory.JournalPath(domain))));
        Assert.Single(Directory.GetFiles(StateDirectory.JournalDirectory));
        Assert.Single(Directory.GetFiles(StateDirectory.LockDirectory));
        Assert.Equal(["journal", "locks"], Directory.GetDirectories(_state.Root).Select(d => Path.GetFileName(d)).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Journal_is_private_to_root_whatever_the_umask()
    {
        using (Umask.Set(0))
            RunJournal.Save(Record("linux_vm"));

        Assert.Equal(PrivateFiles.FileMode, File.GetUnixFileMode(StateDirectory.JournalPath("linux_vm")));
        Assert.Equal(PrivateFiles.FolderMode, File.GetUnixFileMode(StateDirectory.JournalDirectory));
    }

    [Fact]
    public void Domains_returns_every_domain_with_a_journal_by_its_real_name()
    {
        foreach (var name in Names)
            RunJournal.Save(Record(name));

        Assert.Equal(Names.Order(StringComparer.Ordinal), RunJournal.Domains());
    }

    [Fact]
    public void A_host_that_never_ran_a_backup_has_no_journal()
    {
        Assert.Empty(RunJournal.Domains());
        Assert.Null(RunJournal.TryLoad("never-backed-up"));
    }

    [Fact]
    public void Delete_removes_the_journal_of_that_domain_only()
    {
        RunJournal.Save(Record("vm with spaces"));
        RunJournal.Save(Record("vm"));

        RunJournal.Delete("vm with spaces");

        Assert.Null(RunJournal.TryLoad("vm with spaces"));
        Assert.NotNull(RunJournal.TryLoad("vm"));
        Assert.Equal(["vm"], RunJournal.Domains());
    }

    [Fact]
    public void Saving_again_replaces_the_journal_and_leaves_no_temporary_file()
    {
        RunJournal.Save(Record("linux_vm", "20250101-000000"));
        RunJournal.Save(Record("linux_vm", "20250102-000000"));

        Assert.Equal("20250102-000000", RunJournal.TryLoad("linux_vm")!.RunId);
        Assert.Equal([StateDirectory.JournalPath("linux_vm")], Directory.GetFiles(StateDirectory.JournalDirectory));
    }

    [Fact]
    public void Unreadable_journal_is_an_error_that_says_how_to_check_the_domain_never_nothing_to_do()
    {
        // It may be the only record that the domain writes to overlays.
        RunJournal.Save(Record("good"));
        File.WriteAllText(StateDirectory.JournalPath("broken"), "{ \"DomainName\": \"bro");

        var ex = Assert.Throws<BackupException>(() => RunJournal.TryLoad("broken"));

        Assert.Equal(ErrorIds.JournalUnreadable, ex.ErrorId);
        Assert.Equal("broken", ex.Target);
        Assert.Contains(StateDirectory.JournalPath("broken"), ex.Message, StringComparison.Ordinal);
        Assert.Contains("virsh domblklist broken --details", ex.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains("Repair-KvmBackup -DomainName broken -IncludeUnrecorded", ex.RecommendedAction, StringComparison.Ordinal);
        Assert.NotNull(RunJournal.TryLoad("good"));
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
}
