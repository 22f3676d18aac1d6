using System.Diagnostics;
using OdaKvmBackup.Core.Tests.Support;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

/// <summary>
/// A copy in a local store (or on an NFS mount) is read only when it is a regular file reached through no symbolic
/// link below the store's root: whoever can write to the store must not make Test- or Restore-KvmBackup read a host
/// disk (a link), or hang on a read that never ends (a FIFO). The refusal is BackupCopyUnsafe, naming the copy.
/// </summary>
public sealed class StoredCopyTests : IDisposable
{
    private static readonly DateTime T0 = new(2026, 11, 20, 22, 0, 0, DateTimeKind.Utc);
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(15);
    private readonly TempFolder _root = new();
    private readonly TempFolder _host = new();
    private readonly FakeHost _libvirt = new();

    public void Dispose()
    {
        // Whatever still waits to open a FIFO (a read that hung) gets it and its end.
        Run("sh", "-c", "find \"$1\" -type p -exec sh -c 'exec 3<>\"$1\"' sh {} \\;", "sh", _root.Path);
        _root.Dispose();
        _host.Dispose();
    }

    private static void Run(string program, params string[] arguments)
    {
        using var process = Process.Start(new ProcessStartInfo(program, arguments) { RedirectStandardError = true })!;
        process.WaitForExit();
        Assert.Equal(0, process.ExitCode);
    }

    /// <summary>Replaces the set's raw copy with a link to a host file holding the very same bytes, as an attacker
    /// who knows what the copy held would: its size and digest still match backup.json.</summary>
    private static string LinkCopyToHostFile(BackupSetInfo set, string hostFolder)
    {
        var copy = set.Disks.Single(d => d.Target == "vdb").Location;
        var hostFile = Path.Combine(hostFolder, "host-disk.img");
        File.Move(copy, hostFile);
        File.CreateSymbolicLink(copy, hostFile);
        return copy;
    }

    private static void AssertUnsafe(BackupException error, string copy, string why)
    {
        Assert.Equal(ErrorIds.BackupCopyUnsafe, error.ErrorId);
        Assert.Contains(copy, error.Message, StringComparison.Ordinal);
        Assert.Contains(why, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Test_KvmBackup_does_not_read_a_copy_that_is_a_link_to_a_host_file_even_when_its_digest_matches()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        var copy = LinkCopyToHostFile(set, _host.Path);

        var result = await new VerifyService(_libvirt.Tools.QemuImg, new RecordingSink()).VerifyAsync(set, store, CancellationToken.None);
        var errors = result.Errors;

        Assert.False(result.Passed);
        AssertUnsafe(Assert.Single(errors), copy, "is a symbolic link, not a regular file");
        Assert.Equal("not read: the copy is unsafe", result.Disks.Single(d => d.Target == "vdb").DigestCheck);
    }

    [Fact]
    public async Task A_set_folder_that_is_a_link_to_a_host_folder_is_not_read_through()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        var setFolder = _root.Combine("vm1", set.RunId);
        var hostFolder = Path.Combine(_host.Path, "images");
        Directory.Move(setFolder, hostFolder);
        Directory.CreateSymbolicLink(setFolder, hostFolder);

        var result = await new VerifyService(_libvirt.Tools.QemuImg, new RecordingSink()).VerifyAsync(set, store, CancellationToken.None);
        var errors = result.Errors;

        Assert.False(result.Passed);
        Assert.Equal(2, errors.Count);
        Assert.All(errors, e => AssertUnsafe(e, setFolder, $"is reached through '{setFolder}', a symbolic link"));
        var read = await Assert.ThrowsAsync<BackupException>(() => store.OpenReadAsync(set.FileInSet("data"), CancellationToken.None));
        AssertUnsafe(read, setFolder, "a symbolic link");
    }

    [Fact]
    public async Task A_copy_that_is_a_FIFO_is_refused_at_once_by_every_read_never_waited_on()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        var copy = set.Disks.Single(d => d.Target == "vdb").Location;
        File.Delete(copy);
        Run("mkfifo", "-m", "600", copy);
        var relative = set.FileInSet("data");

        // On a thread of their own: a read that blocks in open() fails the test instead of hanging it.
        AssertUnsafe(await Assert.ThrowsAsync<BackupException>(() => Task.Run(() => store.OpenReadAsync(relative, CancellationToken.None)).WaitAsync(Soon)),
            copy, "is a FIFO (named pipe), not a regular file");
        AssertUnsafe(await Assert.ThrowsAsync<BackupException>(() => Task.Run(() => store.SegmentDigestsAsync(relative, 1 << 20, [0], CancellationToken.None)).WaitAsync(Soon)),
            copy, "FIFO");
        AssertUnsafe(await Assert.ThrowsAsync<BackupException>(() => Task.Run(() => store.FindNonZeroAsync(relative, [(0, 4096)], CancellationToken.None)).WaitAsync(Soon)),
            copy, "FIFO");
    }

    [Fact]
    public async Task A_regular_copy_is_still_read()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);

        await using var reader = await store.OpenReadAsync(set.FileInSet("data"), CancellationToken.None);

        Assert.Equal(Sets.DiskSize, reader.Size);
    }
}
