using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

public sealed class BackupSetTests : IDisposable
{
    private readonly TempFolder _temp = new("backupset-tests");

    public void Dispose() => _temp.Dispose();

    private static BackupManifest Manifest(string status = BackupSetStatus.InProgress) => new()
    {
        DomainName = "linux_vm",
        RunId = "20250101-020304",
        Status = status,
        Consistency = BackupConsistency.Quiesced,
        SnapshotName = OverlayNaming.DefaultSnapshotName,
        HostName = "oda1",
        StartedUtc = new DateTime(2025, 1, 1, 2, 3, 4, DateTimeKind.Utc),
        Disks =
        [
            new ManifestDisk { Target = "vda", Source = "/x/vm_linux_vm/linux_boot", Format = "qcow2", File = "linux_boot", SizeBytes = 67108864, DataBytes = 1048576, ContentDigest = new string('a', 64), Verified = true },
            new ManifestDisk { Target = "vdb", Source = "/x/disco secundario, 2", Format = "raw", File = "disco secundario, 2" },
        ],
    };

    [Fact]
    public void Saved_manifest_loads_back_with_every_field()
    {
        var set = _temp.FullPath;
        var saved = Manifest();
        saved.CompletedUtc = new DateTime(2025, 1, 1, 2, 9, 0, DateTimeKind.Utc);

        BackupSet.Save(set, saved);
        var loaded = BackupSet.Load(set);

        Assert.Equal("OdaKvmBackup/1", loaded.Format);
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
        Assert.Equal((67108864L, 1048576L, new string('a', 64), true), (vda.SizeBytes, vda.DataBytes, vda.ContentDigest, vda.Verified));
        var vdb = loaded.Disks[1];
        Assert.Equal("/x/disco secundario, 2", vdb.Source);
        Assert.Null(vdb.ContentDigest);
        Assert.False(vdb.Verified);
    }

    [Fact]
    public void Manifest_is_backup_json_with_readable_enum_and_status()
    {
        BackupSet.Save(_temp.FullPath, Manifest());

        var text = File.ReadAllText(Path.Combine(_temp.FullPath, "backup.json"));
        Assert.Contains("\"Quiesced\"", text, StringComparison.Ordinal);
        Assert.Contains("\"InProgress\"", text, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFiles(_temp.FullPath, "*.tmp"));
    }

    [Fact]
    public void MarkIncomplete_turns_an_interrupted_set_Incomplete_with_the_reason()
    {
        BackupSet.Save(_temp.FullPath, Manifest());

        BackupSet.MarkIncomplete(_temp.FullPath, "the copy was stopped");

        var loaded = BackupSet.Load(_temp.FullPath);
        Assert.Equal(BackupSetStatus.Incomplete, loaded.Status);
        Assert.Equal("the copy was stopped", loaded.Reason);
        Assert.Equal(2, loaded.Disks.Count);
    }

    [Fact]
    public void MarkIncomplete_leaves_a_Complete_set_alone()
    {
        BackupSet.Save(_temp.FullPath, Manifest(BackupSetStatus.Complete));

        BackupSet.MarkIncomplete(_temp.FullPath, "commit failed later");

        var loaded = BackupSet.Load(_temp.FullPath);
        Assert.Equal(BackupSetStatus.Complete, loaded.Status);
        Assert.Null(loaded.Reason);
    }

    [Fact]
    public void MarkIncomplete_keeps_the_first_reason()
    {
        BackupSet.Save(_temp.FullPath, Manifest());

        BackupSet.MarkIncomplete(_temp.FullPath, "copying vda failed: disk full");
        BackupSet.MarkIncomplete(_temp.FullPath, "run was interrupted; closed by Repair-KvmBackup");

        Assert.Equal("copying vda failed: disk full", BackupSet.Load(_temp.FullPath).Reason);
    }

    [Fact]
    public void MarkIncomplete_of_a_folder_without_manifest_creates_nothing()
    {
        var folder = _temp.Folder("empty");

        BackupSet.MarkIncomplete(folder, "x");

        Assert.Empty(Directory.EnumerateFileSystemEntries(folder));
    }
}
