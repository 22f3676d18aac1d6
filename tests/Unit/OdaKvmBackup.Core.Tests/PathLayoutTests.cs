using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// Each kind of path, as its one authority builds it: a set and its files in a store, a retention folder and the
/// overlays kept there, a restore's and a boot test's files, temporary names, and the state folder's files. These are
/// the paths the README, the help and sets already on disk use: a change here is a change users see.
/// </summary>
public sealed class PathLayoutTests
{
    private const string Set = "linux_vm/20261128-101500";
    private static readonly DateTime Utc = new(2026, 12, 6, 11, 30, 5, DateTimeKind.Utc);

    [Fact]
    public void A_set_is_domain_then_run_and_holds_backup_json_domain_xml_and_its_copies()
    {
        Assert.Equal(Set, BackupNames.SetFolder("linux_vm", "20261128-101500"));
        Assert.Equal(Set + "/backup.json", BackupNames.ManifestPath(Set));
        Assert.Equal(Set + "/domain.xml", BackupNames.DomainXmlPath(Set));
        Assert.Equal(Set + "/linux_boot", BackupNames.FileInSet(Set, "linux_boot"));
        Assert.Equal(Set + "/linux_boot.partial", BackupNames.PartialInSet(Set, "linux_boot"));
        Assert.Equal(Set + ".replaced-20261206-113005", BackupNames.ReplacedSetFolder(Set, Utc));
        Assert.Throws<BackupException>(() => BackupNames.PartialInSet(Set, "../x"));
    }

    [Theory]
    [InlineData("../../etc/passwd")]
    [InlineData("/etc/passwd")]
    [InlineData("..")]
    [InlineData("")]
    public void A_name_that_would_leave_the_set_is_refused_naming_the_set(string name)
    {
        var ex = Assert.Throws<BackupException>(() => BackupNames.FileInSet(Set, name, "/backup/" + Set));
        Assert.Equal(ErrorIds.BackupSetUnreadable, ex.ErrorId);
        Assert.StartsWith($"The set /backup/{Set} names ", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Retained_overlays_go_to_retention_path_domain_run_and_repaired_ones_to_a_repaired_folder()
    {
        var run = BackupNames.RetentionFolder("linux_vm", "20261128-101500");
        var repaired = BackupNames.RepairFolder("linux_vm", Utc);

        Assert.Equal("linux_vm/20261128-101500", run);
        Assert.Equal("linux_vm/repaired-20261206-113005", repaired);
        Assert.Equal("/kvm/retencao/linux_vm/20261128-101500", BackupNames.RetentionFolderPath("/kvm/retencao", run));
        Assert.Equal("/kvm/retencao/linux_vm/20261128-101500/linux_boot.FILE_STAGE_BACKUP.TEMP",
            BackupNames.RetainedPath("/kvm/retencao", run, "linux_boot.FILE_STAGE_BACKUP.TEMP"));
        Assert.Equal("/kvm/retencao/linux_vm/repaired-20261206-113005/x.FILE_STAGE_BACKUP.TEMP",
            BackupNames.RetainedPath("/kvm/retencao/", repaired, "x.FILE_STAGE_BACKUP.TEMP"));
        Assert.True(BackupNames.TryParseRetentionFolder("repaired-20261206-113005", out var time));
        Assert.Equal(Utc, time);
    }

    [Fact]
    public void A_restore_writes_partial_then_the_copy_and_keeps_what_it_replaces_beside_it()
    {
        const string whose = "The set /backup/linux_vm/20261128-101500";
        Assert.Equal("/restore/linux_boot", BackupNames.RestoredFilePath("/restore", "linux_boot", whose));
        Assert.Equal("/restore/linux_boot.restore.partial", BackupNames.RestorePartialPath("/restore", "linux_boot", whose));
        Assert.Equal("/restore/linux_boot.before-restore-20261206-113005", BackupNames.KeptAsidePath("/restore", "linux_boot", Utc, whose));
        Assert.Equal("/restore/copy_vm.xml", BackupNames.RestoredDefinitionPath("/restore", "copy_vm"));
        Assert.Equal("/restore/copy_vm-serial0.log", BackupNames.DeviceFilePath("/restore", "copy_vm", "serial", 0, "log"));
        var ex = Assert.Throws<BackupException>(() => BackupNames.RestoredFilePath("/restore", "../etc/shadow", whose));
        Assert.Equal(ErrorIds.BackupSetUnreadable, ex.ErrorId);
        Assert.StartsWith(whose + " names '../etc/shadow'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_boot_test_puts_its_overlays_and_definition_in_its_own_folder()
    {
        const string whose = "The set /backup/linux_vm/20261128-101500";
        Assert.Equal("/bt/linux_vm-boottest-1a2b3c4d/linux_boot.boottest.qcow2",
            BackupNames.BootTestOverlayPath("/bt/linux_vm-boottest-1a2b3c4d", "linux_boot", whose));
        Assert.Equal("/bt/linux_vm-boottest-1a2b3c4d/linux_vm-boottest-1a2b3c4d.xml",
            BackupNames.BootTestDefinitionPath("/bt/linux_vm-boottest-1a2b3c4d", "linux_vm-boottest-1a2b3c4d", whose));
        Assert.Throws<BackupException>(() => BackupNames.BootTestOverlayPath("/bt/x", "../x", whose));
    }

    [Fact]
    public void Temporary_names_are_hidden_beside_their_file_and_new_each_time()
    {
        var temp = BackupNames.AtomicWriteTemp("/var/lib/odakvmbackup/journal/d-linux_vm.json");
        Assert.Matches(@"^/var/lib/odakvmbackup/journal/\.d-linux_vm\.json\.[0-9a-f]{8}\.tmp$", temp);
        Assert.NotEqual(temp, BackupNames.AtomicWriteTemp("/var/lib/odakvmbackup/journal/d-linux_vm.json"));
        Assert.Matches(@"^\.backup\.json\.tmp-[0-9a-f]{8}$", BackupNames.StoreTempName("backup.json"));
        Assert.Matches(@"^\.odakvm-write-check-[0-9a-f]{16}$", BackupNames.StoreProbeFileName());
        Assert.Matches(@"^\.odakvmbackup-probe-[0-9a-f]{32}$", BackupNames.ProbeFileName());
    }

    [Theory]
    [InlineData("", "x", "x")]
    [InlineData(".", "x", "x")]
    [InlineData("/", "x", "/x")]
    [InlineData("/backup", "x", "/backup/x")]
    [InlineData("/backup/", "x", "/backup/x")]
    [InlineData("srv/backup", "vm", "srv/backup/vm")]
    public void A_checked_name_joins_a_folder_with_one_separator(string folder, string name, string expected)
    {
        Assert.Equal(expected, FileSystemPaths.JoinChecked(folder, name));
    }
}

/// <summary>The state folder's files, under $ODAKVMBACKUP_STATE_DIR (and $ODAKVMBACKUP_BOOT_TEST_DIR).</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class StateDirectoryLayoutTests(StateDirectoryFixture state)
{
    [Fact]
    public void Journal_lock_boot_test_record_and_definition_are_named_for_the_domain_in_their_folders()
    {
        state.Reset();
        var root = state.Root;
        Assert.Equal(Path.Join(root, "journal", "d-linux_vm.json"), StateDirectory.JournalPath("linux_vm"));
        Assert.Equal(Path.Join(root, "locks", "d-linux_vm.lock"), StateDirectory.LockPath("linux_vm"));
        Assert.Equal(Path.Join(root, "boot-tests", "d-linux_vm-boottest-1a2b3c4d.json"), StateDirectory.BootTestRecordPath("linux_vm-boottest-1a2b3c4d"));
        // Characters a file name should not carry are escaped: one domain, one file.
        Assert.Equal(Path.Join(root, "journal", "d-a%2Fb%20c.json"), StateDirectory.JournalPath("a/b c"));
        Assert.Equal("a/b c", StateDirectory.DomainOfJournal(StateDirectory.JournalPath("a/b c")));

        var definition = StateDirectory.NewDefinitionPath("linux_vm");
        Assert.Matches("^" + System.Text.RegularExpressions.Regex.Escape(Path.Join(root, "definitions", "d-linux_vm-")) + "[0-9a-f]{32}\\.xml$", definition);
        Assert.NotEqual(definition, StateDirectory.NewDefinitionPath("linux_vm"));
    }

    [Fact]
    public void A_boot_test_folder_is_in_the_scratch_folder_and_a_name_from_a_manifest_cannot_leave_it()
    {
        state.Reset();
        var previous = Environment.GetEnvironmentVariable(StateDirectory.BootTestScratchVariable);
        try
        {
            Environment.SetEnvironmentVariable(StateDirectory.BootTestScratchVariable, null);
            Assert.Equal(Path.Join(state.Root, "boot-tests", "linux_vm-boottest-1a2b3c4d"), StateDirectory.BootTestFolder("linux_vm-boottest-1a2b3c4d", "The set s"));
            Environment.SetEnvironmentVariable(StateDirectory.BootTestScratchVariable, "/scratch");
            Assert.Equal("/scratch/linux_vm-boottest-1a2b3c4d", StateDirectory.BootTestFolder("linux_vm-boottest-1a2b3c4d", "The set s"));
            var ex = Assert.Throws<BackupException>(() => StateDirectory.BootTestFolder("../etc", "The set s"));
            Assert.StartsWith("The set s names '../etc'", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            Environment.SetEnvironmentVariable(StateDirectory.BootTestScratchVariable, previous);
        }
    }
}
