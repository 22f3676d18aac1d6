using OdaKvmBackup.HelpBuilder.Markdown;
using OdaKvmBackup.HelpBuilder.Tests.Support;

namespace OdaKvmBackup.HelpBuilder.Tests;

public class AboutTopicTests
{
    private readonly string _text = AboutTopic.Load(Fixture.Path("Agreeing", "about_Sample.md")).ToHelpText();

    private string[] Lines => _text.Split('\n');

    [Fact]
    public void The_text_starts_with_the_topic_name()
    {
        Assert.Equal(["TOPIC", "    about_Sample", "", "SHORT DESCRIPTION", "    A sample module for the help builder's tests."], Lines[..5]);
    }

    [Fact]
    public void Paragraphs_wrap_at_80_columns_and_keep_a_code_span_whole()
    {
        Assert.All(Lines, l => Assert.True(l.Length <= AboutTopic.Width, l));
        Assert.Contains(Lines, l => l.Contains("`a code span that must stay whole`", StringComparison.Ordinal));
    }

    [Fact]
    public void Code_is_indented_by_8_and_sub_headings_by_2()
    {
        Assert.Contains("        Get-Widget | Set-Widget red", Lines);
        Assert.Contains("  Steps", Lines);
    }

    [Fact]
    public void List_items_wrap_under_their_own_text_and_nested_lists_go_further_in()
    {
        int first = Array.IndexOf(Lines, "    1. `Get-Widget` reads the widgets from the store, one object per widget,");
        Assert.True(first > 0, _text);
        Assert.Equal("       with their names and kinds.", Lines[first + 1]);
        Assert.Contains("      - a nested bullet", Lines);
    }

    [Fact]
    public void A_topic_needs_its_heading_and_both_descriptions()
    {
        var topic = AboutTopic.Parse("about_X.md", "# about_Y\n\n## LONG DESCRIPTION\n\n");
        Assert.Equal(["needs exactly one heading '# about_X'", "has no ## SHORT DESCRIPTION", "has an empty ## LONG DESCRIPTION"], topic.Problems);
    }
}
