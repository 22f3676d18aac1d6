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

    // CVE-2023-51385: OpenSSH before 9.6 (Oracle Linux 7 and 8) hands %h and %r of a ProxyCommand or Match exec to
    // a shell without quoting them, so a host or user name is kept to characters no shell treats specially.
    [Theory]
    [InlineData("a$(touch${IFS}pwned)b:/backup", '$')]
    [InlineData("a;id;b:/backup", ';')]
    [InlineData("a|id:/backup", '|')]
    [InlineData("a&b:/backup", '&')]
    [InlineData("a`id`b:/backup", '`')]
    [InlineData("a'b:/backup", '\'')]
    [InlineData("a\"b:/backup", '"')]
    [InlineData("a>b:/backup", '>')]
    [InlineData("a<b:/backup", '<')]
    [InlineData("a*b:/backup", '*')]
    [InlineData("a?b:/backup", '?')]
    [InlineData("a%hb:/backup", '%')]
    [InlineData("a\\b:/backup", '\\')]
    [InlineData("a!b:/backup", '!')]
    [InlineData("a#b:/backup", '#')]
    [InlineData("a~b:/backup", '~')]
    [InlineData("a{b}:/backup", '{')]
    [InlineData("a=b:/backup", '=')]
    [InlineData("serv\u00e9r:/backup", '\u00e9')]
    [InlineData("r$(id)t@host:/backup", '$')]
    [InlineData("ro;ot@host:/backup", ';')]
    [InlineData("me`id`@host:/backup", '`')]
    [InlineData("a%r@host:/backup", '%')]
    public void A_host_or_user_name_with_a_character_a_shell_could_act_on_is_refused_naming_it(string text, char bad)
    {
        var error = Assert.Throws<BackupException>(() => SshDestination.TryParse(text));

        Assert.Equal(ErrorIds.InvalidSshDestination, error.ErrorId);
        Assert.Equal(BackupErrorCategory.InvalidArgument, error.Category);
        Assert.Contains($"'{bad}'", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("-oProxyCommand=x:/b")]     // a host that ssh would read as an option
    [InlineData("-x@host:/b")]              // a user likewise
    [InlineData("[fe80::1%eth0]:/b")]       // a zone id: '%' is what ssh expands
    [InlineData("[fd00::5;id]:/b")]
    [InlineData("[not-an-address]:/b")]
    public void A_leading_dash_or_a_bracketed_host_that_is_no_IPv6_address_is_refused(string text)
    {
        Assert.Equal(ErrorIds.InvalidSshDestination, Assert.Throws<BackupException>(() => SshDestination.TryParse(text)).ErrorId);
    }

    [Theory]
    [InlineData("backup-srv.example.com", "backup_user")]
    [InlineData("10.0.0.5", "oracle.backup")]
    [InlineData("odakvm-backup", "u-1")]
    [InlineData("HOST_1", "me@corp.example")]   // a directory user (user@domain@host), as scp reads it
    [InlineData("fd00::5", "root")]
    [InlineData("::ffff:10.0.0.5", null)]
    public void Names_of_letters_digits_dots_dashes_and_underscores_and_IPv6_addresses_are_taken(string host, string? user)
    {
        var destination = new SshDestination(user, host, "/backup");

        Assert.Equal(host, destination.Host);
        Assert.Equal(user, destination.User);
    }

    [Theory]
    [InlineData("a;b", null, ';')]
    [InlineData("host", "us$er", '$')]
    [InlineData("-host", null, '-')]
    public void The_same_rules_hold_when_a_destination_is_built_rather_than_parsed(string host, string? user, char bad)
    {
        var error = Assert.Throws<BackupException>(() => new SshDestination(user, host, "/backup"));

        Assert.Equal(ErrorIds.InvalidSshDestination, error.ErrorId);
        Assert.Contains($"'{bad}'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_ssh_target_is_user_at_host_without_brackets()
    {
        Assert.Equal("root@fd00::5", SshDestination.Parse("root@[fd00::5]:/b").SshTarget);
        Assert.Equal("odakvm-backup", SshDestination.Parse("odakvm-backup:/b").SshTarget);
    }
}
