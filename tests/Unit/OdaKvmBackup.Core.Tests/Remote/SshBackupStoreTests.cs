using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>SshBackupStore against a real sshd on loopback (the server's folders are local, so the tests look at
/// them directly).</summary>
[Collection(SshServerCollection.Name)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SshBackupStoreTests
{
    private const int MiB = 1 << 20;
    private const UnixFileMode Folder0700 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode File0600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private readonly TestSshServer _server;

    public SshBackupStoreTests(SshServerFixture fixture) => _server = fixture.Server;

    [Theory]
    [InlineData("../outside")]
    [InlineData("vm/../../outside")]
    [InlineData("/etc/hostname")]
    public async Task A_path_that_leads_outside_the_root_is_refused_as_untrusted_before_the_server_is_asked(string path)
    {
        var root = _server.DataFolder(nameof(A_path_that_leads_outside_the_root_is_refused_as_untrusted_before_the_server_is_asked));
        await using var store = _server.Store("good", root);

        var described = Assert.Throws<BackupException>(() => store.Describe(path));
        var read = await Assert.ThrowsAsync<BackupException>(() => store.ReadSmallFileAsync(path, CancellationToken.None));
        var deleted = await Assert.ThrowsAsync<BackupException>(() => store.DeleteAsync(path, recursive: true, CancellationToken.None));

        Assert.All([described, read, deleted], ex =>
        {
            Assert.Equal(ErrorIds.BackupSetUnreadable, ex.ErrorId);
            Assert.Contains($"'{path}'", ex.Message, StringComparison.Ordinal);
        });
    }

    [Fact]
    public async Task A_sparse_file_is_written_with_its_holes_and_read_back_byte_for_byte()
    {
        var root = _server.DataFolder(nameof(A_sparse_file_is_written_with_its_holes_and_read_back_byte_for_byte));
        await using var store = _server.Store("good", root);
        var expected = new byte[40 * MiB];
        RandomNumberGenerator.Fill(expected.AsSpan(0, 3 * MiB));
        RandomNumberGenerator.Fill(expected.AsSpan(32 * MiB, 1 * MiB + 4096));

        await store.CreateFolderAsync("vm/run", CancellationToken.None);
        await using (var writer = await store.CreateFileAsync("vm/run/disk", CancellationToken.None))
        {
            // The caller sends only non-zero data, in pieces of any size, and reuses its buffer.
            var buffer = new byte[700 * 1024];
            foreach (var (offset, length) in new[] { (0, 3 * MiB), (32 * MiB, MiB + 4096) })
            {
                for (var done = 0; done < length; done += buffer.Length)
                {
                    var count = Math.Min(buffer.Length, length - done);
                    expected.AsSpan(offset + done, count).CopyTo(buffer);
                    await writer.WriteAsync(offset + done, buffer.AsMemory(0, count), CancellationToken.None);
                    buffer.AsSpan().Fill(0xEE);
                }
            }
            await writer.CompleteAsync(expected.Length, CancellationToken.None);
        }

        var stored = Path.Combine(root, "vm/run/disk");
        Assert.Equal(expected, File.ReadAllBytes(stored));
        var allocated = AllocatedBytes(stored);
        Assert.True(allocated <= 5 * MiB, $"the stored file allocates {allocated} bytes for 4 MiB of data");
        Assert.Equal(File0600, File.GetUnixFileMode(stored));
        Assert.Equal(Folder0700, File.GetUnixFileMode(Path.Combine(root, "vm")));
        Assert.Equal(Folder0700, File.GetUnixFileMode(Path.Combine(root, "vm/run")));

        await using var reader = await store.OpenReadAsync("vm/run/disk", CancellationToken.None);
        Assert.Equal(expected.Length, reader.Size);
        var readBack = new byte[expected.Length];
        long position = 0;
        int read;
        while ((read = await reader.ReadAsync(position, readBack.AsMemory((int)position, (int)Math.Min(MiB, expected.Length - position)), CancellationToken.None)) > 0)
            position += read;
        Assert.Equal(expected.Length, position);
        Assert.Equal(expected, readBack);
        var random = new byte[10];
        Assert.Equal(10, await reader.ReadAsync(32 * MiB + 5, random, CancellationToken.None));
        Assert.Equal(expected.AsSpan(32 * MiB + 5, 10).ToArray(), random);
        Assert.Equal(0, await reader.ReadAsync(expected.Length, random, CancellationToken.None));
    }

    [Fact]
    public async Task Creating_a_file_over_a_world_readable_one_leaves_it_0600_and_empty_past_the_new_size()
    {
        var root = _server.DataFolder(nameof(Creating_a_file_over_a_world_readable_one_leaves_it_0600_and_empty_past_the_new_size));
        var stored = Path.Combine(root, "disk");
        File.WriteAllBytes(stored, new byte[3 * MiB]);
        File.SetUnixFileMode(stored, File0600 | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        await using var store = _server.Store("good", root);

        await using (var writer = await store.CreateFileAsync("disk", CancellationToken.None))
        {
            await writer.WriteAsync(0, "new"u8.ToArray(), CancellationToken.None);
            await writer.CompleteAsync(10, CancellationToken.None);
        }

        Assert.Equal(File0600, File.GetUnixFileMode(stored));
        Assert.Equal("new\0\0\0\0\0\0\0"u8.ToArray(), File.ReadAllBytes(stored));
    }

    [Fact]
    public async Task A_small_file_replaces_the_old_one_whole_and_leaves_no_temporary_file()
    {
        var root = _server.DataFolder(nameof(A_small_file_replaces_the_old_one_whole_and_leaves_no_temporary_file));
        await using var store = _server.Store("good", root);
        await store.CreateFolderAsync("vm", CancellationToken.None);

        await store.WriteSmallFileAsync("vm/backup.json", "{\"old\":1}"u8.ToArray(), CancellationToken.None);
        var content = new byte[600 * 1024]; // more than one WRITE
        RandomNumberGenerator.Fill(content);
        await store.WriteSmallFileAsync("vm/backup.json", content, CancellationToken.None);

        Assert.Equal(content, await store.ReadSmallFileAsync("vm/backup.json", CancellationToken.None));
        Assert.Equal(["backup.json"], Directory.GetFileSystemEntries(Path.Combine(root, "vm")).Select(Path.GetFileName));
        Assert.Equal(File0600, File.GetUnixFileMode(Path.Combine(root, "vm/backup.json")));
    }

    [Fact]
    public async Task Reading_a_small_file_that_is_not_there_is_PathNotFound()
    {
        await using var store = _server.Store("good", _server.DataFolder(nameof(Reading_a_small_file_that_is_not_there_is_PathNotFound)));

        var error = await Assert.ThrowsAnyAsync<BackupException>(() => store.ReadSmallFileAsync("vm/backup.json", CancellationToken.None));

        Assert.Equal(ErrorIds.PathNotFound, error.ErrorId);
        Assert.Contains("good:", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Entries_are_listed_described_renamed_and_deleted()
    {
        var root = _server.DataFolder(nameof(Entries_are_listed_described_renamed_and_deleted));
        await using var store = _server.Store("good", root);
        await store.CreateFolderAsync("vm/run.partial/sub", CancellationToken.None);
        await store.WriteSmallFileAsync("vm/run.partial/disk", new byte[1234], CancellationToken.None);
        await store.WriteSmallFileAsync("vm/run.partial/sub/x", [1], CancellationToken.None);
        await store.WriteSmallFileAsync("vm/old", [1, 2], CancellationToken.None);
        await store.WriteSmallFileAsync("vm/new", [3], CancellationToken.None);

        await store.RenameAsync("vm/run.partial", "vm/run", CancellationToken.None);
        await store.RenameAsync("vm/new", "vm/old", CancellationToken.None); // replaces

        var entries = (await store.ListAsync("vm/run", CancellationToken.None)).OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
        Assert.Equal(["disk", "sub"], entries.Select(e => e.Name));
        Assert.False(entries[0].IsFolder);
        Assert.Equal(1234, entries[0].Size);
        Assert.Equal(File0600, entries[0].Mode);
        Assert.True(entries[1].IsFolder);
        Assert.Equal(Folder0700, entries[1].Mode);
        Assert.Equal([3], File.ReadAllBytes(Path.Combine(root, "vm/old")));
        Assert.Empty(await store.ListAsync("vm/nothing", CancellationToken.None));
        var entry = await store.GetEntryAsync("vm/run/disk", CancellationToken.None);
        Assert.NotNull(entry);
        Assert.Equal("disk", entry.Name);
        Assert.InRange(entry.ModifiedUtc, DateTime.UtcNow.AddMinutes(-5), DateTime.UtcNow.AddMinutes(1));
        Assert.Null(await store.GetEntryAsync("vm/run.partial", CancellationToken.None));
        Assert.Equal($"good:{root}/vm/run/disk", store.Describe("vm/run/disk"));

        await store.DeleteAsync("vm/run", recursive: true, CancellationToken.None);
        await store.DeleteAsync("vm/old", recursive: false, CancellationToken.None);
        await store.DeleteAsync("vm/not-there", recursive: true, CancellationToken.None);

        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(root, "vm")));
    }

    [Fact]
    public async Task Free_space_is_what_statvfs_reports_for_an_unprivileged_writer()
    {
        var root = _server.DataFolder(nameof(Free_space_is_what_statvfs_reports_for_an_unprivileged_writer));
        await using var store = _server.Store("good", root);

        var free = await store.GetFreeBytesAsync(CancellationToken.None);

        var (code, output) = TestSshServer.Run("stat", ["-f", "-c", "%a %S", root]);
        Assert.Equal(0, code);
        var fields = output.Split(' ');
        var expected = long.Parse(fields[0]) * long.Parse(fields[1]);
        Assert.InRange(free, expected - 256L * MiB, expected + 256L * MiB);
    }

    [Fact]
    public async Task Checking_a_writable_folder_leaves_nothing_behind()
    {
        var root = _server.DataFolder(nameof(Checking_a_writable_folder_leaves_nothing_behind));
        await using var store = _server.Store("good", root);

        await store.CheckWritableAsync(CancellationToken.None);

        Assert.Empty(Directory.GetFileSystemEntries(root));
    }

    [Fact]
    public async Task Checking_a_folder_that_is_not_there_is_PathNotFound()
    {
        await using var store = _server.Store("good", _server.Path("data", "no-such-folder"));

        var error = await Assert.ThrowsAnyAsync<BackupException>(() => store.CheckWritableAsync(CancellationToken.None));

        Assert.Equal(ErrorIds.PathNotFound, error.ErrorId);
    }

    [Fact]
    public async Task Checking_a_folder_nobody_may_write_is_PathNotWritable()
    {
        // root may write anywhere, except into an immutable folder.
        var root = _server.DataFolder(nameof(Checking_a_folder_nobody_may_write_is_PathNotWritable));
        Assert.Equal(0, TestSshServer.Run("chattr", ["+i", root]).Code);
        try
        {
            await using var store = _server.Store("good", root);

            var error = await Assert.ThrowsAnyAsync<BackupException>(() => store.CheckWritableAsync(CancellationToken.None));

            Assert.Equal(ErrorIds.PathNotWritable, error.ErrorId);
        }
        finally
        {
            TestSshServer.Run("chattr", ["-i", root]);
        }
    }

    [Fact]
    public async Task Segment_digests_are_computed_on_the_server_and_equal_sha256sum_of_each_segment()
    {
        var root = _server.DataFolder(nameof(Segment_digests_are_computed_on_the_server_and_equal_sha256sum_of_each_segment));
        const string name = "disk 'one' $(touch pwned); x";
        var content = new byte[3 * MiB + 1000];
        RandomNumberGenerator.Fill(content.AsSpan(0, MiB));
        RandomNumberGenerator.Fill(content.AsSpan(3 * MiB));
        await using var store = _server.Store("good", root);
        await using (var writer = await store.CreateFileAsync(name, CancellationToken.None))
        {
            await writer.WriteAsync(0, content.AsMemory(0, MiB), CancellationToken.None);
            await writer.WriteAsync(3 * MiB, content.AsMemory(3 * MiB), CancellationToken.None);
            await writer.CompleteAsync(content.Length, CancellationToken.None);
        }

        var digests = await store.SegmentDigestsAsync(name, MiB, [3, 0, 2, 1], CancellationToken.None);

        var expected = new long[] { 3, 0, 2, 1 }.Select(i => Convert.ToHexStringLower(SHA256.HashData(content.AsSpan((int)i * MiB, (int)Math.Min(MiB, content.Length - i * MiB))))).ToList();
        Assert.Equal(expected, digests);
        Assert.False(File.Exists(Path.Combine(root, "pwned")));
        var odd = await store.SegmentDigestsAsync(name, 3000, [0, 1000], CancellationToken.None);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(content.AsSpan(0, 3000))), odd[0]);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(content.AsSpan(1000 * 3000, 3000))), odd[1]);
    }

    [Fact]
    public async Task Segment_digests_of_a_file_that_is_not_there_are_PathNotFound()
    {
        await using var store = _server.Store("good", _server.DataFolder(nameof(Segment_digests_of_a_file_that_is_not_there_are_PathNotFound)));

        var error = await Assert.ThrowsAnyAsync<BackupException>(() => store.SegmentDigestsAsync("nothing", MiB, [0], CancellationToken.None));

        Assert.Equal(ErrorIds.PathNotFound, error.ErrorId);
    }

    [Fact]
    public async Task A_relative_destination_is_under_the_login_home_folder()
    {
        var folder = $"odakvm-test-{Guid.NewGuid():N}";
        await using var store = _server.Store("good", "~/" + folder);
        try
        {
            Directory.CreateDirectory(Path.Combine("/root", folder));
            await store.WriteSmallFileAsync("f", [42], CancellationToken.None);

            Assert.Equal([42], File.ReadAllBytes(Path.Combine("/root", folder, "f")));
            Assert.Equal($"good:{folder}/f", store.Describe("f"));
        }
        finally
        {
            Directory.Delete(Path.Combine("/root", folder), recursive: true);
        }
    }

    [Fact]
    public async Task Writing_past_a_full_file_system_is_DestinationFull()
    {
        var root = _server.DataFolder(nameof(Writing_past_a_full_file_system_is_DestinationFull));
        Assert.Equal(0, TestSshServer.Run("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", root]).Code);
        try
        {
            await using var store = _server.Store("good", root);
            var data = new byte[MiB];
            RandomNumberGenerator.Fill(data);

            var error = await Assert.ThrowsAnyAsync<BackupException>(async () =>
            {
                await using var writer = await store.CreateFileAsync("disk", CancellationToken.None);
                for (var offset = 0L; offset < 8 * MiB; offset += MiB)
                    await writer.WriteAsync(offset, data, CancellationToken.None);
                await writer.CompleteAsync(8 * MiB, CancellationToken.None);
            });

            Assert.Equal(ErrorIds.DestinationFull, error.ErrorId);
        }
        finally
        {
            TestSshServer.Run("umount", [root]);
        }
    }

    internal static long AllocatedBytes(string path)
    {
        var (code, output) = TestSshServer.Run("stat", ["-c", "%b", path]);
        Assert.Equal(0, code);
        return long.Parse(output.Trim()) * 512;
    }
}
