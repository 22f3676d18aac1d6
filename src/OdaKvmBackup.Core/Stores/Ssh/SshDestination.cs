namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>
/// A destination on an SSH server, written as scp writes it: <c>[user@]host:path</c>. The host may be an alias from
/// ~/.ssh/config, a name, an IPv4 address or an IPv6 address in brackets (<c>root@[fd00::5]:/backup</c>). The path
/// is absolute, or relative to the login's home folder (<c>host:</c> alone is the home folder).
/// </summary>
internal sealed record SshDestination
{
    public SshDestination(string? user, string host, string path)
    {
        if (user is not null && UserProblem(user) is { } userProblem)
            throw Invalid($"{user}@{host}:{path}", userProblem);
        if (HostProblem(host) is { } hostProblem)
            throw Invalid($"{(user is null ? "" : user + "@")}{host}:{path}", hostProblem);
        User = user;
        Host = host;
        Path = path;
    }

    // Host and user names are kept to characters no shell acts on: OpenSSH before 9.6 (Oracle Linux 7 and 8) hands
    // %h and %r of a ProxyCommand or Match exec in ~/.ssh/config to a shell unquoted (CVE-2023-51385), so a name
    // such as 'a$(touch x)b' would run a command on this host.

    /// <summary>Why <paramref name="host"/> cannot be one, or null: a name or alias of letters, digits, '.', '-'
    /// and '_' not starting with '-', or an IPv6 address (hex digits, ':' and '.'; no zone id, whose '%' ssh expands).</summary>
    private static string? HostProblem(string host)
    {
        if (host.Length == 0)
            return "the host name is empty";
        if (host.Contains(':'))
        {
            var bad = host.FirstOrDefault(c => !(char.IsAsciiHexDigit(c) || c is ':' or '.'));
            if (bad != default)
                return $"the IPv6 address '[{host}]' holds {Show(bad)}: an address is hex digits, ':' and '.' (no zone id)";
            return System.Net.IPAddress.TryParse(host, out var address) && address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
                ? null : $"'[{host}]' is not an IPv6 address";
        }
        if (host[0] == '-')
            return $"the host name '{host}' starts with '-', which ssh would read as an option";
        var wrong = host.FirstOrDefault(c => !(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_'));
        return wrong == default ? null
            : $"the host name '{host}' holds {Show(wrong)}: a host name or ~/.ssh/config alias is letters, digits, '.', '-' and '_' (an IPv6 address is written in brackets)";
    }

    /// <summary>Why <paramref name="user"/> cannot be one, or null: letters, digits, '.', '_' and '-' not starting
    /// with '-', and '@' for a directory user (me@corp.example).</summary>
    private static string? UserProblem(string user)
    {
        if (user.Length == 0)
            return "the user name is empty";
        if (user[0] == '-')
            return $"the user name '{user}' starts with '-', which ssh would read as an option";
        var wrong = user.FirstOrDefault(c => !(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or '@'));
        return wrong == default ? null
            : $"the user name '{user}' holds {Show(wrong)}: a user name is letters, digits, '.', '_' and '-' ('@' for a directory user such as me@corp.example)";
    }

    private static string Show(char c) => char.IsControl(c) || char.IsWhiteSpace(c) && c != ' ' ? $"the character U+{(int)c:X4}" : $"'{c}'";

    /// <summary>The login name, or null to let ssh choose (~/.ssh/config's User, else the local user).</summary>
    public string? User { get; }

    /// <summary>The host as ssh is given it: a ~/.ssh/config alias, a name or an address (IPv6 without brackets).</summary>
    public string Host { get; }

    /// <summary>The folder on the server: absolute, or relative to the login's home ("" is the home itself).</summary>
    public string Path { get; }

    /// <summary>What ssh is given as its destination argument: "user@host" or "host".</summary>
    public string SshTarget => User is null ? Host : $"{User}@{Host}";

    /// <summary>
    /// True when <paramref name="text"/> names a remote folder, by scp's rule: a ':' comes before any '/' (a bracketed
    /// IPv6 address may hold ':'), and the text does not start with '/', './', '../' or '~'. Anything else is a local path.
    /// </summary>
    public static bool IsRemote(string text) => FindColon(text) >= 0;

    /// <summary>The destination, or null when <paramref name="text"/> is a local path. Throws InvalidSshDestination
    /// when it looks remote but its user or host cannot be one.</summary>
    public static SshDestination? TryParse(string text)
    {
        var colon = FindColon(text);
        if (colon < 0)
            return null;
        var login = text[..colon];
        var path = text[(colon + 1)..];
        // A user name may itself hold '@' (user@domain@host): the host follows the last one, as in scp.
        var at = login.LastIndexOf('@');
        var user = at >= 0 ? login[..at] : null;
        var host = at >= 0 ? login[(at + 1)..] : login;
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
            if (!host.Contains(':'))
                throw Invalid(text, $"'[{host}]' is not an IPv6 address (only an IPv6 address is written in brackets)");
        }
        else if (host.Contains('[') || host.Contains(']'))
            throw Invalid(text, $"'{host}' is not a host name (an IPv6 address is written in brackets: [fd00::5])");
        return new SshDestination(user, host, path);
    }

    public static SshDestination Parse(string text) =>
        TryParse(text) ?? throw Invalid(text, "it is a local path: a remote one is written [user@]host:path");

    /// <summary>The same server, another path.</summary>
    public SshDestination WithPath(string path) => new(User, Host, path);

    /// <summary>The canonical form: "user@host:/path", "host:path", "user@[fd00::5]:/path".</summary>
    public override string ToString() => $"{(User is null ? "" : User + "@")}{(Host.Contains(':') ? $"[{Host}]" : Host)}:{Path}";

    /// <summary>The index of the ':' that ends the host part, or -1 for a local path.</summary>
    private static int FindColon(string text)
    {
        if (text.Length == 0 || text[0] is '/' or '~' || text.StartsWith("./", StringComparison.Ordinal)
            || text.StartsWith("../", StringComparison.Ordinal))
            return -1;
        var inBrackets = false;
        for (var i = 0; i < text.Length; i++)
        {
            switch (text[i])
            {
                case '[' when i == 0 || text[i - 1] == '@':
                    inBrackets = true;
                    break;
                case ']' when inBrackets:
                    inBrackets = false;
                    break;
                case ':' when !inBrackets:
                    // scp: a leading ':' is part of a file name.
                    return i == 0 ? -1 : i;
                case '/' when !inBrackets:
                    return -1;
            }
        }
        return -1;
    }

    private static BackupException Invalid(string text, string why) =>
        new(ErrorIds.InvalidSshDestination, BackupErrorCategory.InvalidArgument, $"'{text}' is not a valid SSH destination: {why}.",
            "Write a remote destination as [user@]host:/path (host: a name or an alias from ~/.ssh/config of letters, digits, '.', '-' and '_', an IPv4 address, or [IPv6]).", text);
}
