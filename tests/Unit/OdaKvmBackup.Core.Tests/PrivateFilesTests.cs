using System.Diagnostics;
using System.Text;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>Files as the module makes them: private whatever the umask, and replaced so that a crash leaves the
/// old content or the new, never a mix or nothing.</summary>
public sealed class PrivateFilesTests : IDisposable
{
    private readonly TempFolder _temp = new("privatefiles-tests");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Replacing_a_file_never_writes_into_the_old_one_so_a_crash_before_the_rename_leaves_the_old_content()
    {
        var path = _temp.Combine("d-linux_vm.json");
        File.WriteAllText(path, "old journal");
        // A second name for the old file's inode: if the new content were written into it (truncate and write), a
        // crash in the middle would leave a torn file; it must only ever be replaced by a rename.
        var oldInode = _temp.Combine("old-inode");
        Link(path, oldInode);

        PrivateFiles.WriteAtomically(path, Encoding.UTF8.GetBytes("new journal"));

        Assert.Equal("new journal", File.ReadAllText(path));
        Assert.Equal("old journal", File.ReadAllText(oldInode));
    }

    [Fact]
    public async Task New_content_is_written_to_a_temporary_file_beside_it_then_renamed_over_it()
    {
        var path = _temp.Combine("backup.json");
        File.WriteAllText(path, "old");
        using var watcher = new FileSystemWatcher(_temp.FullPath) { IncludeSubdirectories = false, EnableRaisingEvents = true };
        var created = new List<string>();
        var renamed = new TaskCompletionSource<RenamedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
        watcher.Created += (_, e) =>
        {
            lock (created)
                created.Add(e.Name!);
        };
        watcher.Renamed += (_, e) => renamed.TrySetResult(e);

        PrivateFiles.WriteAtomically(path, Encoding.UTF8.GetBytes("new"));

        var rename = await renamed.Task.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal("backup.json", rename.Name);
        Assert.StartsWith(".backup.json.", rename.OldName, StringComparison.Ordinal);
        Assert.EndsWith(".tmp", rename.OldName, StringComparison.Ordinal);
        lock (created)
            Assert.Contains(rename.OldName, created);
        Assert.Equal(["backup.json"], Directory.GetFileSystemEntries(_temp.FullPath).Select(Path.GetFileName));
    }

    [Fact]
    public void Write_whose_rename_fails_leaves_the_old_content_and_no_temporary_file()
    {
        // An immutable target cannot be replaced, not even by root: the write gets as far as the temporary file.
        var path = _temp.Combine("backup.json");
        File.WriteAllText(path, "old");
        Chattr("+i", path);

        var ex = Record.Exception(() => PrivateFiles.WriteAtomically(path, Encoding.UTF8.GetBytes("new")));
        Chattr("-i", path);

        Assert.NotNull(ex);
        Assert.Equal("old", File.ReadAllText(path));
        Assert.Equal(["backup.json"], Directory.GetFileSystemEntries(_temp.FullPath).Select(Path.GetFileName));
    }

    [Fact]
    public void Written_file_is_0600_even_under_umask_000_and_when_it_replaces_a_world_readable_file()
    {
        var path = _temp.Combine("domain.xml");
        File.WriteAllText(path, "<domain/>");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

        using (Umask.Set(0))
        {
            PrivateFiles.WriteAtomically(path, Encoding.UTF8.GetBytes("<domain><name>x</name></domain>"));
            PrivateFiles.WriteAtomically(_temp.Combine("new.json"), Encoding.UTF8.GetBytes("{}"));
        }

        Assert.Equal(PrivateFiles.FileMode, File.GetUnixFileMode(path));
        Assert.Equal(PrivateFiles.FileMode, File.GetUnixFileMode(_temp.Combine("new.json")));
    }

    [Fact]
    public void Folders_are_made_0700_with_their_missing_parents_and_folders_that_exist_are_left_as_they_are()
    {
        var existing = _temp.Folder("backup");
        File.SetUnixFileMode(existing, (UnixFileMode)0b111_101_101);
        var deep = Path.Combine(existing, "linux_vm", "20261128-101500");

        using (Umask.Set(0))
            PrivateFiles.CreateFolder(deep);

        Assert.Equal(PrivateFiles.FolderMode, File.GetUnixFileMode(deep));
        Assert.Equal(PrivateFiles.FolderMode, File.GetUnixFileMode(Path.GetDirectoryName(deep)!));
        Assert.Equal((UnixFileMode)0b111_101_101, File.GetUnixFileMode(existing));
    }

    [Fact]
    public void Create_new_never_follows_a_planted_symlink_nor_opens_an_existing_file()
    {
        var victim = _temp.Combine("victim");
        var dangling = _temp.Combine("dangling-target");
        File.WriteAllText(victim, "keep me");
        File.CreateSymbolicLink(_temp.Combine("link-to-file"), victim);
        File.CreateSymbolicLink(_temp.Combine("link-to-nothing"), dangling);

        Assert.Throws<IOException>(() => PrivateFiles.CreateNew(_temp.Combine("link-to-file")).Dispose());
        Assert.Throws<IOException>(() => PrivateFiles.CreateNew(_temp.Combine("link-to-nothing")).Dispose());
        Assert.Throws<IOException>(() => PrivateFiles.CreateNew(victim).Dispose());

        Assert.Equal("keep me", File.ReadAllText(victim));
        Assert.False(File.Exists(dangling), "the link's target was created");
    }

    [Fact]
    public void Folder_sync_works_on_a_normal_folder_and_names_a_folder_it_cannot_open()
    {
        PrivateFiles.FsyncDirectory(_temp.FullPath);

        var missing = _temp.Combine("gone");
        var ex = Assert.Throws<IOException>(() => PrivateFiles.FsyncDirectory(missing));
        Assert.Contains(missing, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Delete_removes_the_file_and_a_missing_file_is_fine()
    {
        var path = _temp.Combine("d-x.json");
        File.WriteAllText(path, "{}");

        PrivateFiles.Delete(path);
        PrivateFiles.Delete(path);

        Assert.False(File.Exists(path));
    }

    private static void Link(string existing, string newName) => Run("ln", existing, newName);

    internal static void Chattr(string flag, string path)
    {
        var code = Run("chattr", flag, path);
        if (code != 0)
            Assert.Fail($"chattr {flag} {path} failed ({code}): this test needs root on ext4 (or a file system with the immutable flag).");
    }

    private static int Run(string program, params string[] args)
    {
        using var process = Process.Start(new ProcessStartInfo(program, args) { RedirectStandardError = true, UseShellExecute = false })!;
        process.StandardError.ReadToEnd();
        process.WaitForExit();
        return process.ExitCode;
    }
}
