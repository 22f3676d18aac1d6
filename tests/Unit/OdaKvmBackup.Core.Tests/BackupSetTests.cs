using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>backup.json in a local store.</summary>
public sealed class BackupSetTests : IDisposable
{
    private const string Set = "linux_vm/20250101-020304";
    private readonly TempFolder _temp = new("backupset-tests");
    private readonly LocalBackupStore _store;

    public BackupSetTests()
    {
        _store = new LocalBackupStore(_temp.FullPath);
        Directory.CreateDirectory(_temp.Combine("linux_vm", "20250101-020304"));
    }

    public void Dispose() => _temp.Dispose();

    // A set of the earlier format (its disks carry content digests), which this version still reads.
    private static BackupManifest Manifest(BackupSetStatus status = BackupSetStatus.InProgress) => new()
    {
        Format = CheckedManifest.EarlierFormat,
        DomainName = "linux_vm",
        RunId = "20250101-020304",
        Status = status,
        Consistency = BackupConsistency.Quiesced,
        SnapshotName = BackupNames.DefaultSnapshotName,
        HostName = "oda1",
        StartedUtc = new DateTime(2025, 1, 1, 2, 3, 4, DateTimeKind.Utc),
        Disks =
        [
            new ManifestDisk { Target = "vda", Source = "/x/vm_linux_vm/linux_boot", Format = "qcow2", File = "linux_boot", SizeBytes = 67108864, DataBytes = 1048576, ContentDigest = new string('a', 64), Verified = true, VerifiedBy = "read back" },
            new ManifestDisk { Target = "vdb", Source = "/x/disco secundario, 2", Format = "raw", File = "disco secundario, 2" },
        ],
        ExcludedDisks = [new ExcludedDisk("vdc", "/x/asm1", "not piped to New-KvmDiskSnapshot")],
    };

    /// <summary>backup.json keeps its words: a set written before the status became an enum, and a set written
    /// now, are read by either version.</summary>
    [Theory]
    [InlineData(BackupSetStatus.Complete, "Complete")]
    [InlineData(BackupSetStatus.Incomplete, "Incomplete")]
    [InlineData(BackupSetStatus.InProgress, "InProgress")]
    public async Task Status_is_written_to_backup_json_as_its_word_and_read_back_from_it(BackupSetStatus status, string word)
    {
        var manifest = Manifest(status);
        manifest.Disks[1] = new ManifestDisk { Target = "vdb", Source = "/x/disco", Format = "raw", File = "disco", SizeBytes = 1048576, DataBytes = 4096, ContentDigest = new string('b', 64), Verified = true };
        var text = System.Text.Encoding.UTF8.GetString(BackupSet.Serialize(manifest));
        Assert.Contains($"\"Status\": \"{word}\"", text, StringComparison.Ordinal);

        await _store.WriteSmallFileAsync(BackupNames.ManifestPath(Set), System.Text.Encoding.UTF8.GetBytes(text), CancellationToken.None);
        var loaded = await BackupSet.LoadAsync(_store, Set, CancellationToken.None);

        Assert.Equal(status, loaded.Manifest.Status);
        Assert.Equal(word, new BackupSetInfo(_store, loaded).Status);
    }

    [Fact]
    public async Task Saved_manifest_loads_back_with_every_field()
    {
        var saved = Manifest();
        saved.CompletedUtc = new DateTime(2025, 1, 1, 2, 9, 0, DateTimeKind.Utc);

        await BackupSet.SaveAsync(_store, Set, saved, CancellationToken.None);
        var loaded = (await BackupSet.LoadAsync(_store, Set, CancellationToken.None)).Manifest;

        Assert.Equal("OdaKvmBackup/2", loaded.Format);
        Assert.Equal("linux_vm", loaded.DomainName);
        Assert.Equal("20250101-020304", loaded.RunId);
        Assert.Equal(BackupSetStatus.InProgress, loaded.Status);
        Assert.Null(loaded.Reason);
        Assert.Equal(BackupConsistency.Quiesced, loaded.Consistency);
        Assert.Equal("FILE_STAGE_BACKUP.TEMP", loaded.SnapshotName);
        Assert.Equal("oda1", loaded.HostName);
        Assert.Equal(saved.StartedUtc, loaded.StartedUtc);
        Assert.Equal(saved.CompletedUtc, loaded.CompletedUtc);
        Assert.Equal(2, loaded.Disks.Count);
        var vda = loaded.Disks[0];
        Assert.Equal(("vda", "/x/vm_linux_vm/linux_boot", "qcow2", "linux_boot"), (vda.Target, vda.Source, vda.Format, vda.File));
        Assert.Equal((67108864L, 1048576L, new string('a', 64), true, "read back"), (vda.SizeBytes, vda.DataBytes, vda.ContentDigest, vda.Verified, vda.VerifiedBy));
        var vdb = loaded.Disks[1];
        Assert.Equal("/x/disco secundario, 2", vdb.Source);
        Assert.Null(vdb.ContentDigest);
        Assert.False(vdb.Verified);
        Assert.Equal(new ExcludedDisk("vdc", "/x/asm1", "not piped to New-KvmDiskSnapshot"), Assert.Single(loaded.ExcludedDisks));
    }

    [Fact]
    public async Task Manifest_is_a_private_backup_json_with_readable_enum_and_status_and_no_temporary_file_left()
    {
        using (Umask.Set(0))
            await BackupSet.SaveAsync(_store, Set, Manifest(), CancellationToken.None);

        var path = _temp.Combine("linux_vm", "20250101-020304", "backup.json");
        var text = File.ReadAllText(path);
        Assert.Contains("\"Quiesced\"", text, StringComparison.Ordinal);
        Assert.Contains("\"InProgress\"", text, StringComparison.Ordinal);
        Assert.Equal(PrivateFiles.FileMode, File.GetUnixFileMode(path));
        Assert.Equal(["backup.json"], Directory.GetFileSystemEntries(Path.GetDirectoryName(path)!).Select(Path.GetFileName));
    }

    [Fact]
    public void Manifest_of_a_run_says_what_its_journal_says()
    {
        var run = RunJournalTests.Record("linux_vm");
        run.SnapshotUtc = new DateTime(2025, 1, 1, 2, 3, 5, DateTimeKind.Utc);

        var manifest = BackupManifest.FromRun(run, BackupSetStatus.Incomplete, "the copy of vda failed");

        Assert.Equal((BackupSetStatus.Incomplete, "the copy of vda failed"), (manifest.Status, manifest.Reason));
        Assert.Null(manifest.CompletedUtc);
        Assert.Equal(run.SnapshotUtc, manifest.StartedUtc);
        Assert.Equal(["linux_boot", "disco"], manifest.Disks.Select(d => d.File));
        Assert.Equal([false, true], manifest.Disks.Select(d => d.Verified));
        Assert.Equal(run.ExcludedDisks, manifest.ExcludedDisks);
        Assert.NotNull(BackupManifest.FromRun(run, BackupSetStatus.Complete, null).CompletedUtc);
    }

    [Theory]
    [InlineData("")]
    [InlineData("{ \"DomainName\": \"linux")]
    [InlineData("null")]
    public async Task Manifest_that_cannot_be_read_is_BackupSetUnreadable_naming_the_file(string content)
    {
        File.WriteAllText(_temp.Combine("linux_vm", "20250101-020304", "backup.json"), content);

        var ex = await Assert.ThrowsAsync<BackupException>(() => BackupSet.LoadAsync(_store, Set, CancellationToken.None));

        Assert.Equal(ErrorIds.BackupSetUnreadable, ex.ErrorId);
        Assert.Contains(_temp.Combine("linux_vm", "20250101-020304", "backup.json"), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Missing_manifest_is_PathNotFound()
    {
        var ex = await Assert.ThrowsAsync<BackupException>(() => BackupSet.LoadAsync(_store, "linux_vm/19990101-000000", CancellationToken.None));

        Assert.Equal(ErrorIds.PathNotFound, ex.ErrorId);
    }
}
