using OdaKvmBackup.Core.Remote;

namespace OdaKvmBackup.Core.Tests.Remote;

public class SshDestinationTests
{
    [Theory]
    [InlineData("root@serverbackup:/backup", "root", "serverbackup", "/backup", "root@serverbackup:/backup")]
    [InlineData("serverbackup:/backup", null, "serverbackup", "/backup", "serverbackup:/backup")]
    [InlineData("odakvm-backup:backups/oda", null, "odakvm-backup", "backups/oda", "odakvm-backup:backups/oda")]
    [InlineData("backup@10.0.0.5:/srv/backup", "backup", "10.0.0.5", "/srv/backup", "backup@10.0.0.5:/srv/backup")]
    [InlineData("root@[fd00::5]:/backup", "root", "fd00::5", "/backup", "root@[fd00::5]:/backup")]
    [InlineData("[::1]:/backup", null, "::1", "/backup", "[::1]:/backup")]
    [InlineData("host:", null, "host", "", "host:")]
    [InlineData("host:~/backup", null, "host", "~/backup", "host:~/backup")]
    [InlineData("me@corp.example@host:/b", "me@corp.example", "host", "/b", "me@corp.example@host:/b")]
    [InlineData("host:/path:with:colons", null, "host", "/path:with:colons", "host:/path:with:colons")]
    public void A_remote_destination_is_read_as_scp_reads_it(string text, string? user, string host, string path, string canonical)
    {
        Assert.True(SshDestination.IsRemote(text));
        var destination = SshDestination.Parse(text);

        Assert.Equal(user, destination.User);
        Assert.Equal(host, destination.Host);
        Assert.Equal(path, destination.Path);
        Assert.Equal(canonical, destination.ToString());
    }

    [Theory]
    [InlineData("/backup")]
    [InlineData("/mnt/nfs:share/backup")]
    [InlineData("./host:backup")]
    [InlineData("../host:backup")]
    [InlineData("~/host:backup")]
    [InlineData("~")]
    [InlineData("backup/host:x")]
    [InlineData("backup")]
    [InlineData(":backup")]
    [InlineData("")]
    public void Anything_else_is_a_local_path(string text)
    {
        Assert.False(SshDestination.IsRemote(text));
        Assert.Null(SshDestination.TryParse(text));
    }

    [Theory]
    [InlineData("-oProxyCommand=sh:/x")]
    [InlineData("@host:/x")]
    [InlineData("ho st:/x")]
    [InlineData("a[b:/x")]
    public void A_remote_looking_destination_with_an_impossible_user_or_host_is_refused(string text)
    {
        var error = Assert.Throws<BackupException>(() => SshDestination.TryParse(text));

        Assert.Equal(ErrorIds.InvalidSshDestination, error.ErrorId);
        Assert.Equal(BackupErrorCategory.InvalidArgument, error.Category);
    }

    [Fact]
    public void The_ssh_target_is_user_at_host_without_brackets()
    {
        Assert.Equal("root@fd00::5", SshDestination.Parse("root@[fd00::5]:/b").SshTarget);
        Assert.Equal("odakvm-backup", SshDestination.Parse("odakvm-backup:/b").SshTarget);
    }
}
